/**
 * The OpenAI- and Anthropic-compatible gateway: the models a caller may use,
 * under names people can type, listed in either API's format; chat completions
 * translated from OpenAI's request format into a `ChatRequest` for whichever
 * provider serves the model, and back from its chunks into OpenAI's completion
 * objects or stream chunks; Anthropic's messages likewise (the translation in
 * `Gateway/Messages.ts`), and their prompts counted in tokens; embeddings into
 * an `EmbedRequest` and back into OpenAI's list of vectors.
 * All go through the same checks (the key's scope, its model lists, rate
 * limits and token budgets) and record their usage the same way: the two
 * chat dialects share one call (`start`), one way of gathering a whole answer
 * (`gather`) and of opening a stream (`opened`), and differ only in the wire.
 *
 * Nothing is stored but the token usage, per API key, which the reports
 * here sum per key, per user and over every user. The upstream call
 * lives exactly as long as the caller's scope: a client that goes away ends
 * it. The HTTP side (`Gateway/Http.ts`) turns failures into each dialect's error body.
 */
import { Chunk, DateTime, Effect, Either, Exit, Option, Ref, type Scope, Stream } from "effect"
import { ApiKeysRepo } from "./Auth/ApiKeysRepo.js"
import { requirePermission } from "./Auth/Policy.js"
import { RateLimits } from "./Auth/RateLimits.js"
import { estimatePromptTokens, nothingAnswered, tally, usageToCount } from "./Chat/Context.js"
import { type Actor, CurrentActor } from "./Domain/Actor.js"
import {
  checkRange,
  type Forbidden,
  type NotFound,
  orNotFound,
  type RateLimited,
  type ValidationError
} from "./Domain/Errors.js"
import { type ApiKeyId, generateUuid } from "./Domain/Ids.js"
import type { LlmModel, Provider } from "./Domain/Model.js"
import type { MyUsageQuery, UsageReportQuery } from "./Gateway/Api.js"
import { messageEvents, messageOf, messagesChatRequest, messagesPrompt } from "./Gateway/Messages.js"
import type {
  CountTokensRequest,
  Message,
  MessagesRequest,
  MessageStreamEvent,
  MessageTokensCount,
  ModelInfo,
  ModelInfoPage,
  ModelInfoQuery
} from "./Gateway/MessagesSchemas.js"
import {
  ApiKeyUsage,
  type ChatCompletion,
  type ChatCompletionChunk,
  type ChatCompletionRequest,
  type ChunkChoice,
  type Content,
  type EmbeddingInput,
  type EmbeddingList,
  type EmbeddingRequest,
  type GatewayModel,
  imageOfUrl,
  InvalidRequest,
  maxEmbeddingInputs,
  type ModelList,
  type MyUsage,
  passedThrough,
  type RequestMessage,
  TokenBudget,
  UnknownModel,
  type Usage,
  type UsageByDay,
  type UsageByModel,
  type UsageBySource,
  type UsageByUser,
  type UsageCounts,
  type UsageReport,
  UsageTotals
} from "./Gateway/Schemas.js"
import { type UsageFilter, UsageRepo } from "./Gateway/UsageRepo.js"
import { ModelRegistry, type ResolvedModel } from "./Models.js"
import type { ProviderFailure } from "./Models/Errors.js"
import { ModelsRepo } from "./Models/ModelsRepo.js"
import { ProvidersRepo } from "./Models/ProvidersRepo.js"
import { type ChatChunk, type ChatMessage, type ChatRequest, type FinishReason, offerTools } from "./Providers/Chat.js"
import { EmbeddingsUnsupported, type EmbedInput, float32Bytes } from "./Providers/Embeddings.js"

/** What a completion request can fail with before the provider is involved, and then the provider's failures. */
export type GatewayFailure = InvalidRequest | UnknownModel | Forbidden | RateLimited | ProviderFailure

/** What an embeddings request can fail with: a completion's failures, and a provider that cannot embed it. */
export type EmbeddingFailure = GatewayFailure | EmbeddingsUnsupported

/** A model a caller may use, with the id the gateway lists it under. */
export interface Target {
  readonly id: string
  readonly model: LlmModel
  readonly provider: Provider
}

const qualifiedName = (provider: Provider, model: LlmModel) => `${provider.name}/${model.providerModel}`

/**
 * Usable models (enabled, of an enabled provider) under the names the gateway lists them by: the
 * provider's name for the model when no other usable model has that name, else
 * `<provider name>/<model>`. Named among every usable model, so that a model's name does not depend
 * on who asks.
 */
export const namedTargets = (
  rows: ReadonlyArray<LlmModel>,
  providers: ReadonlyArray<Provider>
): ReadonlyArray<Target> => {
  const providerById = new Map(providers.map((provider) => [provider.id, provider]))
  const sharing = new Map<string, number>()
  for (const row of rows) sharing.set(row.providerModel, (sharing.get(row.providerModel) ?? 0) + 1)
  return rows.flatMap((model): Array<Target> => {
    const provider = providerById.get(model.providerId)
    if (provider === undefined) return []
    const id = sharing.get(model.providerModel) === 1 ? model.providerModel : qualifiedName(provider, model)
    return [{ id, model, provider }]
  })
}

/** The model a name means: its listed id, `<provider>/<model>` even when unique, or its UUID. */
export const targetNamed = (targets: ReadonlyArray<Target>, name: string): Target | undefined =>
  targets.find((candidate) => candidate.id === name) ??
    targets.find((candidate) => qualifiedName(candidate.provider, candidate.model) === name) ??
    targets.find((candidate) => candidate.model.id === name)

const toModelInfo = (target: Target): ModelInfo => ({
  type: "model",
  id: target.id,
  display_name: target.model.displayName,
  created_at: DateTime.formatIso(target.model.createdAt)
})

/**
 * A page of `targets`, as Anthropic pages its models list: the first `limit`, or the `limit` right
 * after the model `after_id` names, or right before the one `before_id` names (a name as requests
 * take it). A cursor naming no model listed is refused: the page it meant is gone.
 */
export const modelInfoPage = (
  targets: ReadonlyArray<Target>,
  query: ModelInfoQuery
): Effect.Effect<ModelInfoPage, InvalidRequest> => {
  const { after_id: afterId, before_id: beforeId, limit } = query
  if (afterId !== undefined && beforeId !== undefined) {
    return Effect.fail(
      new InvalidRequest({ message: "Only one of 'after_id' and 'before_id' may be given.", param: "before_id" })
    )
  }
  const cursor = afterId ?? beforeId
  const named = cursor === undefined ? undefined : targetNamed(targets, cursor)
  if (cursor !== undefined && named === undefined) {
    const param = afterId !== undefined ? "after_id" : "before_id"
    return Effect.fail(
      new InvalidRequest({ message: `${param}: no model '${cursor}' among the models listed.`, param })
    )
  }
  const at = named === undefined ? -1 : targets.indexOf(named)
  const [start, end] = beforeId !== undefined ? [Math.max(0, at - limit), at] : [at + 1, at + 1 + limit]
  const page = targets.slice(start, end)
  return Effect.succeed({
    data: page.map(toModelInfo),
    has_more: beforeId !== undefined ? start > 0 : end < targets.length,
    first_id: page[0]?.id ?? null,
    last_id: page.at(-1)?.id ?? null
  })
}

export type ReportedUsage = Extract<ChatChunk, { readonly _tag: "usage" }>

/** An answer on its way: the model, what the client will see as its identity, and the usage reported so far. */
interface Call {
  readonly target: Target
  readonly upstream: Stream.Stream<ChatChunk, ProviderFailure>
  /** `chatcmpl-…`, `msg_…`: the answer's id in the client's dialect. */
  readonly id: string
  /** Unix seconds. */
  readonly created: number
  readonly usage: Ref.Ref<Option.Option<ReportedUsage>>
}

/** How a request in one of the gateway's dialects becomes a provider's request, once its model is known. */
type ToChatRequest = (target: Target) => Effect.Effect<ChatRequest, InvalidRequest>

const textOf = (content: Content | null | undefined): string =>
  content === null || content === undefined
    ? ""
    : typeof content === "string"
    ? content
    : content.map((part) => part.text).join("\n")

const toChatMessage = (message: RequestMessage): ChatMessage => {
  switch (message.role) {
    case "system":
    case "developer":
      return { role: "system", content: textOf(message.content) }
    case "user": {
      if (typeof message.content === "string") return { role: "user", content: message.content }
      const images = message.content.flatMap((part) =>
        part.type === "image_url" ? [imageOfUrl(part.image_url.url)] : []
      )
      return {
        role: "user",
        content: message.content.flatMap((part) => part.type === "text" ? [part.text] : []).join("\n"),
        ...(images.length > 0 ? { images } : {})
      }
    }
    case "assistant":
      return {
        role: "assistant",
        content: textOf(message.content),
        ...(message.tool_calls && message.tool_calls.length > 0
          ? {
            toolCalls: message.tool_calls.map((call) => ({
              id: call.id,
              name: call.function.name,
              arguments: call.function.arguments
            }))
          }
          : {})
      }
    case "tool":
      return { role: "tool", content: textOf(message.content), toolCallId: message.tool_call_id }
  }
}

/** Checks what the schema cannot see (a named tool must be one of the tools) and builds the provider request. */
const toChatRequest = (
  body: ChatCompletionRequest,
  target: Target
): Effect.Effect<ChatRequest, InvalidRequest> => {
  const choice = body.tool_choice ?? undefined
  const offered = offerTools(
    (body.tools ?? []).map(({ function: tool }) => tool),
    typeof choice === "object" ? { name: choice.function.name } : choice
  )
  if (Either.isLeft(offered)) {
    return Effect.fail(
      new InvalidRequest({
        message: offered.left === "needs-tools"
          ? "'tool_choice' requires 'tools' to be specified"
          : `'tool_choice' names a function that is not among 'tools': ${
            typeof choice === "object" ? choice.function.name : ""
          }`,
        param: "tool_choice"
      })
    )
  }
  const stop = body.stop ?? undefined
  const maxTokens = body.max_completion_tokens ?? body.max_tokens ?? undefined
  // These mean the same to every OpenAI-style API; another provider's API would reject or misread them.
  const speaksOpenAi = target.provider.kind === "openai" || target.provider.kind === "openai-compatible"
  const extra = Object.fromEntries(
    speaksOpenAi ? passedThrough.flatMap((name) => body[name] != null ? [[name, body[name]]] : []) : []
  )
  return Effect.succeed({
    model: target.model.providerModel,
    messages: body.messages.map(toChatMessage),
    ...(body.temperature != null ? { temperature: body.temperature } : {}),
    ...(body.top_p != null ? { topP: body.top_p } : {}),
    ...(maxTokens !== undefined ? { maxTokens } : {}),
    ...(stop !== undefined ? { stop: typeof stop === "string" ? [stop] : stop } : {}),
    ...offered.right,
    ...(Object.keys(extra).length > 0 ? { extra } : {})
  })
}

/**
 * Checks what the schema cannot see, as OpenAI does: no empty input, no empty text or token
 * array, at most `maxEmbeddingInputs` inputs.
 */
const toEmbedInput = (input: EmbeddingInput): Either.Either<EmbedInput, InvalidRequest> => {
  const invalidInput = (message: string, param = "input") => Either.left(new InvalidRequest({ message, param }))
  if (typeof input === "string") {
    return input.length === 0
      ? invalidInput("'input' cannot be an empty string.")
      : Either.right({ _tag: "texts", texts: [input] })
  }
  const items: ReadonlyArray<string | number | ReadonlyArray<number>> = input
  if (items.length === 0) return invalidInput("'input' cannot be an empty array.")
  // One text's token ids: one input, however long (the limit is on the number of inputs).
  if (items.every((item): item is number => typeof item === "number")) {
    return Either.right({ _tag: "tokens", tokens: [items] })
  }
  if (items.length > maxEmbeddingInputs) {
    return invalidInput(`'input' holds ${items.length} inputs; at most ${maxEmbeddingInputs} are allowed.`)
  }
  const empty = items.findIndex((item) => typeof item !== "number" && item.length === 0)
  if (empty >= 0) {
    return invalidInput(`'input[${empty}]' cannot be empty.`, `input[${empty}]`)
  }
  if (items.every((item): item is string => typeof item === "string")) {
    return Either.right({ _tag: "texts", texts: items })
  }
  return Either.right({
    _tag: "tokens",
    tokens: items.filter((item): item is ReadonlyArray<number> => typeof item === "object")
  })
}

const toUsage = (reported: ReportedUsage): Usage => ({
  prompt_tokens: reported.promptTokens,
  completion_tokens: reported.completionTokens,
  total_tokens: reported.promptTokens + reported.completionTokens
})

/**
 * Some providers say "stop" when the answer ends in tool calls; OpenAI's
 * clients look for "tool_calls" to run them.
 */
const finishReasonOf = (reason: FinishReason, calledTools: boolean): FinishReason =>
  reason === "stop" && calledTools ? "tool_calls" : reason

/** A fresh id, `<prefix><32 hex digits>`: `call_` and `toolu_` for tool calls, `chatcmpl-` and `msg_` for answers. */
const freshId = (prefix: string) => Effect.map(generateUuid, (uuid) => `${prefix}${uuid.replaceAll("-", "")}`)

const toolCallId = freshId("call_")
const toolUseId = freshId("toolu_")

export interface GatheredToolCall {
  readonly id: string
  readonly name: string
  readonly arguments: string
}

/** A whole answer, gathered chunk by chunk. */
export interface Answer {
  readonly text: string
  /** In the order the model made them. */
  readonly toolCalls: ReadonlyArray<GatheredToolCall>
  /** Never null once gathered: a provider's answer ends with a finish chunk, else its stream fails (Providers/Resilience.ts). */
  readonly finish: FinishReason
  /** The stop sequence that ended the answer, when the provider said which. */
  readonly stopSequence: string | undefined
  readonly usage: Option.Option<ReportedUsage>
}

interface Gathering {
  readonly text: string
  readonly toolCalls: ReadonlyMap<number, GatheredToolCall>
  readonly finish: Extract<ChatChunk, { readonly _tag: "finish" }> | null
}

export class Gateway extends Effect.Service<Gateway>()("Gateway/Gateway", {
  effect: Effect.gen(function*() {
    const models = yield* ModelsRepo
    const providers = yield* ProvidersRepo
    const registry = yield* ModelRegistry
    const usageRepo = yield* UsageRepo
    const apiKeys = yield* ApiKeysRepo
    const rateLimits = yield* RateLimits

    /**
     * Every model a user may pick (enabled, of an enabled provider; for admins
     * too), under its gateway name (`namedTargets`); of those, the ones the
     * caller's key allows.
     */
    const usableTargets = Effect.gen(function*() {
      const targets = namedTargets(
        yield* models.list({ status: null, providerId: null, usableOnly: true }),
        yield* providers.list
      )
      const actor = yield* CurrentActor
      return targets.filter((target) => actor.mayUse(target.model.id))
    })

    const toGatewayModel = (target: Target): GatewayModel => ({
      id: target.id,
      object: "model",
      created: Math.floor(DateTime.toEpochMillis(target.model.createdAt) / 1000),
      owned_by: target.provider.name
    })

    /** The model a client names: by its listed id, by `<provider>/<model>` even when unique, or by its UUID. */
    const pick = (targets: ReadonlyArray<Target>, name: string): Effect.Effect<Target, UnknownModel> => {
      const target = targetNamed(targets, name)
      return target === undefined ? Effect.fail(new UnknownModel({ model: name })) : Effect.succeed(target)
    }

    const listModels: Effect.Effect<ModelList, Forbidden, CurrentActor> = Effect.gen(function*() {
      yield* requirePermission("models:read")
      return { object: "list" as const, data: (yield* usableTargets).map(toGatewayModel) }
    }).pipe(Effect.withSpan("Gateway.listModels"))

    const retrieveModel = (name: string): Effect.Effect<GatewayModel, UnknownModel | Forbidden, CurrentActor> =>
      Effect.gen(function*() {
        yield* requirePermission("models:read")
        return toGatewayModel(yield* pick(yield* usableTargets, name))
      }).pipe(Effect.withSpan("Gateway.retrieveModel"))

    /** A page of the models the caller may use, as Anthropic's API lists them. */
    const listModelInfos = (
      query: ModelInfoQuery
    ): Effect.Effect<ModelInfoPage, Forbidden | InvalidRequest, CurrentActor> =>
      Effect.gen(function*() {
        yield* requirePermission("models:read")
        return yield* modelInfoPage(yield* usableTargets, query)
      }).pipe(Effect.withSpan("Gateway.listModelInfos"))

    const retrieveModelInfo = (name: string): Effect.Effect<ModelInfo, UnknownModel | Forbidden, CurrentActor> =>
      Effect.gen(function*() {
        yield* requirePermission("models:read")
        return toModelInfo(yield* pick(yield* usableTargets, name))
      }).pipe(Effect.withSpan("Gateway.retrieveModelInfo"))

    /** The model a client names, among those the caller may use, with its provider's client. */
    const resolveTarget = (
      name: string
    ): Effect.Effect<
      { readonly target: Target; readonly resolved: ResolvedModel },
      UnknownModel | Forbidden,
      CurrentActor
    > =>
      Effect.gen(function*() {
        const target = yield* pick(yield* usableTargets, name)
        const resolved = yield* registry.resolve(target.model.id).pipe(
          // Disabled between the two reads: as unknown as if it had been a moment earlier.
          Effect.catchTag("NotFound", (_: NotFound) => new UnknownModel({ model: name }))
        )
        return { target, resolved }
      })

    /** The model an answer is asked of, once the caller may ask for one (`models:use`, the rate limits, the budgets). */
    const findTarget = (
      name: string
    ): Effect.Effect<
      { readonly actor: Actor; readonly target: Target; readonly resolved: ResolvedModel },
      UnknownModel | Forbidden | RateLimited,
      CurrentActor
    > =>
      Effect.gen(function*() {
        // Checked first: a key that may not use models learns nothing about which exist.
        const actor = yield* requirePermission("models:use")
        // One budget with the chat turns: `CHAT_RATE_LIMIT_PER_USER` counts every answer asked for.
        yield* rateLimits.modelRequest(actor)
        return { actor, ...(yield* resolveTarget(name)) }
      })

    /**
     * Resolves the model, translates the request (from either dialect) and prepares the upstream
     * call; usage is recorded when `scope` closes: what the provider reported by then, else the
     * estimate of what it was asked and answered (`usageToCount`).
     */
    const start = (
      model: string,
      toRequest: ToChatRequest,
      idPrefix: string
    ): Effect.Effect<Call, GatewayFailure, CurrentActor | Scope.Scope> =>
      Effect.gen(function*() {
        const { actor, resolved, target } = yield* findTarget(model)
        const request = yield* toRequest(target)
        const usage = yield* Ref.make(Option.none<ReportedUsage>())
        // What the provider answered, for an estimate when its usage never comes (the client left first).
        const answered = nothingAnswered()
        let asked = false
        yield* Effect.addFinalizer((exit) =>
          Effect.flatMap(Ref.get(usage), (reported) => {
            // A client that leaves once the provider has been asked leaves its prompt to be paid for.
            const counted = usageToCount(
              request,
              Option.getOrNull(reported),
              answered,
              asked && Exit.isInterrupted(exit)
            )
            return counted === null ? Effect.void : recordUsage(actor, target, counted)
          })
        )
        const id = yield* freshId(idPrefix)
        const created = Math.floor(DateTime.toEpochMillis(yield* DateTime.now) / 1000)
        const upstream = resolved.client.chat(request).pipe(
          Stream.onStart(Effect.sync(() => (asked = true))),
          Stream.tap((chunk) => {
            tally(answered, chunk)
            return chunk._tag === "usage" ? Ref.set(usage, Option.some(chunk)) : Effect.void
          })
        )
        return { target, upstream, id, created, usage }
      })

    /** One request's usage, for the caller's key and user, under the model (completions and embeddings). */
    const recordUsage = (
      actor: Actor,
      target: Target,
      usage: { readonly promptTokens: number; readonly completionTokens: number }
    ) =>
      // The answer was delivered: a lost usage row is logged, not turned into a failed request.
      usageRepo.recordSpent({
        userId: actor.userId,
        apiKeyId: actor.apiKeyId ?? null,
        modelId: target.model.id,
        modelName: target.model.providerModel,
        source: "gateway",
        promptTokens: usage.promptTokens,
        completionTokens: usage.completionTokens
      })

    /** The whole answer of `call`; tool calls the provider gave no id get `toolId`'s. */
    const gather = (call: Call, toolId: Effect.Effect<string>): Effect.Effect<Answer, ProviderFailure> =>
      Effect.gen(function*() {
        const empty: Gathering = { text: "", toolCalls: new Map(), finish: null }
        const gathered = yield* Stream.runFoldEffect(
          call.upstream,
          empty,
          (gathering, chunk) => addChunk(gathering, chunk, toolId)
        )
        return {
          text: gathered.text,
          toolCalls: [...gathered.toolCalls.entries()].sort(([a], [b]) => a - b).map(([, toolCall]) => toolCall),
          finish: gathered.finish?.reason ?? "stop",
          stopSequence: gathered.finish?.stopSequence,
          usage: yield* Ref.get(call.usage)
        }
      })

    /** A whole answer as one `chat.completion` object. */
    const complete = (
      body: ChatCompletionRequest
    ): Effect.Effect<ChatCompletion, GatewayFailure, CurrentActor> =>
      Effect.gen(function*() {
        const call = yield* start(body.model, (target) => toChatRequest(body, target), "chatcmpl-")
        const answer = yield* gather(call, toolCallId)
        const toolCalls = answer.toolCalls.map((toolCall) => ({
          id: toolCall.id,
          type: "function" as const,
          function: { name: toolCall.name, arguments: toolCall.arguments }
        }))
        const usage = answer.usage
        return {
          id: call.id,
          object: "chat.completion" as const,
          created: call.created,
          model: call.target.id,
          choices: [{
            index: 0,
            message: {
              role: "assistant" as const,
              content: answer.text.length > 0 || toolCalls.length === 0 ? answer.text : null,
              refusal: null,
              ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {})
            },
            finish_reason: finishReasonOf(answer.finish, toolCalls.length > 0),
            logprobs: null
          }],
          ...(Option.isSome(usage) ? { usage: toUsage(usage.value) } : {})
        }
      }).pipe(Effect.scoped, Effect.withSpan("Gateway.complete"))

    const addChunk = (
      gathering: Gathering,
      chunk: ChatChunk,
      toolId: Effect.Effect<string>
    ): Effect.Effect<Gathering> => {
      switch (chunk._tag) {
        case "text":
          return Effect.succeed({ ...gathering, text: gathering.text + chunk.text })
        case "tool-call":
          return Effect.gen(function*() {
            const known = gathering.toolCalls.get(chunk.index)
            const toolCalls = new Map(gathering.toolCalls)
            toolCalls.set(chunk.index, {
              id: known?.id ?? chunk.id ?? (yield* toolId),
              name: known?.name ?? chunk.name ?? "",
              arguments: (known?.arguments ?? "") + chunk.arguments
            })
            return { ...gathering, toolCalls }
          })
        case "usage":
          return Effect.succeed(gathering)
        case "finish":
          return Effect.succeed({ ...gathering, finish: chunk })
      }
    }

    /**
     * The upstream of `call`, its first chunk awaited here: a provider that fails from the start
     * fails this effect (an HTTP error status) rather than the stream. The upstream call lives in
     * the caller's scope.
     */
    const opened = (
      call: Call
    ): Effect.Effect<Stream.Stream<ChatChunk, ProviderFailure>, ProviderFailure, Scope.Scope> =>
      Effect.gen(function*() {
        const pull = yield* Stream.toPull(call.upstream)
        const first = yield* pull.pipe(
          Effect.repeat({ until: Chunk.isNonEmpty }),
          Effect.map(Option.some),
          Effect.catchAll(Option.match({ onNone: () => Effect.succeed(Option.none()), onSome: Effect.fail }))
        )
        return Option.match(first, {
          onNone: () => Stream.empty,
          onSome: (chunk) => Stream.concat(Stream.fromChunk(chunk), Stream.repeatEffectChunkOption(pull))
        })
      })

    /** The answer as `chat.completion.chunk`s, once the provider's first chunk has arrived (`opened`). */
    const stream = (
      body: ChatCompletionRequest
    ): Effect.Effect<Stream.Stream<ChatCompletionChunk, ProviderFailure>, GatewayFailure, CurrentActor | Scope.Scope> =>
      Effect.gen(function*() {
        const call = yield* start(body.model, (target) => toChatRequest(body, target), "chatcmpl-")
        const upstream = yield* opened(call)
        return toChunkStream(call, upstream, body.stream_options?.include_usage === true)
      }).pipe(Effect.withSpan("Gateway.stream"))

    /** A whole answer as one Anthropic `message`. */
    const createMessage = (body: MessagesRequest): Effect.Effect<Message, GatewayFailure, CurrentActor> =>
      Effect.gen(function*() {
        const call = yield* start(body.model, (target) => messagesChatRequest(body, target), "msg_")
        return messageOf(call.id, call.target.id, yield* gather(call, toolUseId))
      }).pipe(Effect.scoped, Effect.withSpan("Gateway.createMessage"))

    /**
     * How many input tokens a request's prompt is for its model: its Anthropic provider's own count,
     * else the server's estimate (the one that fits a chat's history to the model's window). Nothing
     * is generated, so no budget applies and no usage is recorded.
     */
    const countTokens = (
      body: CountTokensRequest
    ): Effect.Effect<MessageTokensCount, GatewayFailure, CurrentActor> =>
      Effect.gen(function*() {
        yield* requirePermission("models:use")
        const { resolved, target } = yield* resolveTarget(body.model)
        const request = { model: target.model.providerModel, ...(yield* messagesPrompt(body)) }
        const inputTokens = yield* Option.match(resolved.client.tokenCounter, {
          onNone: () => Effect.succeed(estimatePromptTokens(request)),
          onSome: (count) => count(request)
        })
        return { input_tokens: inputTokens }
      }).pipe(Effect.withSpan("Gateway.countTokens"))

    /** The answer as Anthropic's stream events, once the provider's first chunk has arrived (`opened`). */
    const streamMessage = (
      body: MessagesRequest
    ): Effect.Effect<Stream.Stream<MessageStreamEvent, ProviderFailure>, GatewayFailure, CurrentActor | Scope.Scope> =>
      Effect.gen(function*() {
        const call = yield* start(body.model, (target) => messagesChatRequest(body, target), "msg_")
        const upstream = yield* opened(call)
        return messageEvents({ id: call.id, model: call.target.id, upstream, usage: call.usage, toolUseId })
      }).pipe(Effect.withSpan("Gateway.streamMessage"))

    const toChunkStream = (
      call: Call,
      upstream: Stream.Stream<ChatChunk, ProviderFailure>,
      includeUsage: boolean
    ): Stream.Stream<ChatCompletionChunk, ProviderFailure> => {
      const chunkOf = (choices: ReadonlyArray<ChunkChoice>, usage?: Usage): ChatCompletionChunk => ({
        id: call.id,
        object: "chat.completion.chunk",
        created: call.created,
        model: call.target.id,
        choices,
        ...(includeUsage ? { usage: usage ?? null } : {})
      })
      const choice = (delta: ChunkChoice["delta"], finishReason: FinishReason | null = null) =>
        chunkOf([{ index: 0, delta, finish_reason: finishReason, logprobs: null }])
      // One stream per request, consumed once: plain state is enough.
      const seenToolCalls = new Set<number>()
      let finished = false
      const translate = (chunk: ChatChunk): Effect.Effect<ReadonlyArray<ChatCompletionChunk>> => {
        if (finished) return Effect.succeed([])
        switch (chunk._tag) {
          case "text":
            return Effect.succeed(chunk.text.length > 0 ? [choice({ content: chunk.text })] : [])
          case "tool-call":
            return Effect.gen(function*() {
              const first = !seenToolCalls.has(chunk.index)
              seenToolCalls.add(chunk.index)
              // OpenAI's clients assemble a call from its first delta's id and type.
              const id = first ? chunk.id ?? (yield* toolCallId) : undefined
              return [choice({
                tool_calls: [{
                  index: chunk.index,
                  ...(id !== undefined ? { id, type: "function" as const } : {}),
                  function: { ...(chunk.name !== undefined ? { name: chunk.name } : {}), arguments: chunk.arguments }
                }]
              })]
            })
          case "usage":
            return Effect.succeed([])
          case "finish":
            finished = true
            return Effect.succeed([choice({}, finishReasonOf(chunk.reason, seenToolCalls.size > 0))])
        }
      }
      const trailer = Effect.map(
        Ref.get(call.usage),
        (usage) => includeUsage && Option.isSome(usage) ? [chunkOf([], toUsage(usage.value))] : []
      )
      return Stream.make(choice({ role: "assistant", content: "" })).pipe(
        Stream.concat(Stream.mapConcatEffect(upstream, translate)),
        Stream.concat(Stream.fromIterableEffect(trailer))
      )
    }

    /**
     * Embeddings of the inputs, by the model the client names, with the checks of a completion
     * (`findTarget`) and its usage recorded (prompt tokens only). Bad input and a provider that
     * cannot embed the request are answered before anything is sent.
     */
    const embed = (body: EmbeddingRequest): Effect.Effect<EmbeddingList, EmbeddingFailure, CurrentActor> =>
      Effect.gen(function*() {
        const input = yield* toEmbedInput(body.input)
        const { actor, resolved, target } = yield* findTarget(body.model)
        const embedder = yield* Option.match(resolved.client.embedder, {
          onNone: () =>
            Effect.fail(
              new EmbeddingsUnsupported({
                message: `The model '${body.model}' cannot create embeddings: its provider (${target.provider.name}) ` +
                  "has no embeddings API.",
                param: "model"
              })
            ),
          onSome: Effect.succeed
        })
        const request = {
          model: target.model.providerModel,
          input,
          ...(body.dimensions != null ? { dimensions: body.dimensions } : {})
        }
        const refusal = embedder.refusal(request)
        if (refusal !== undefined) return yield* refusal
        const { promptTokens, vectors } = yield* embedder.embed(request)
        yield* recordUsage(actor, target, { promptTokens, completionTokens: 0 })
        const base64 = body.encoding_format === "base64"
        return {
          object: "list" as const,
          data: vectors.map((vector, index) => ({
            object: "embedding" as const,
            index,
            embedding: base64 ? Buffer.from(float32Bytes(vector)).toString("base64") : vector
          })),
          model: body.model,
          usage: { prompt_tokens: promptTokens, total_tokens: promptTokens }
        }
      }).pipe(Effect.withSpan("Gateway.embed"))

    /** The sums of some groups of usage. */
    const totalsOf = (groups: ReadonlyArray<UsageCounts>): UsageCounts =>
      groups.reduce(
        (totals, group) => ({
          requests: totals.requests + group.requests,
          promptTokens: totals.promptTokens + group.promptTokens,
          completionTokens: totals.completionTokens + group.completionTokens,
          totalTokens: totals.totalTokens + group.totalTokens
        }),
        { requests: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0 }
      )

    /** The usage of one of the caller's API keys. */
    const keyUsage = (id: ApiKeyId): Effect.Effect<ApiKeyUsage, Forbidden | NotFound, CurrentActor> =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("keys:manage")
        const key = yield* apiKeys.findForUser(id, actor.userId).pipe(orNotFound("No such API key"))
        const rows = yield* usageRepo.totalsForKey(key.id, actor.userId)
        const byModel = rows.map((row) =>
          new UsageTotals({ ...row, totalTokens: row.promptTokens + row.completionTokens })
        )
        return new ApiKeyUsage({ apiKeyId: key.id, ...totalsOf(byModel), byModel })
      }).pipe(Effect.withSpan("Gateway.keyUsage"))

    // --- usage reports: the database groups and sums, this adds the totals of the groups (one query, so
    // the totals always agree with the groups)

    const counted = (
      row: { readonly requests: number; readonly promptTokens: number; readonly completionTokens: number }
    ) => ({
      requests: row.requests,
      promptTokens: row.promptTokens,
      completionTokens: row.completionTokens,
      totalTokens: row.promptTokens + row.completionTokens
    })

    /** The range asked for and the totals of `groups`: what every report has besides its groups. */
    const framed = (filter: UsageFilter, groups: ReadonlyArray<UsageCounts>) => ({
      from: filter.from ?? null,
      to: filter.to ?? null,
      totals: totalsOf(groups)
    })

    const byModel = (filter: UsageFilter): Effect.Effect<UsageByModel> =>
      Effect.map(usageRepo.sumsByModel(filter), (rows) => {
        const groups = rows.map((row) => ({
          key: row.modelId ?? row.modelName ?? "",
          modelId: row.modelId,
          modelName: row.modelName,
          ...counted(row)
        }))
        return { ...framed(filter, groups), groupBy: "model" as const, groups }
      })

    const byDay = (filter: UsageFilter): Effect.Effect<UsageByDay> =>
      Effect.map(usageRepo.sumsByDay(filter), (rows) => {
        const groups = rows.map((row) => ({ key: row.day, day: row.day, ...counted(row) }))
        return { ...framed(filter, groups), groupBy: "day" as const, groups }
      })

    const bySource = (filter: UsageFilter): Effect.Effect<UsageBySource> =>
      Effect.map(usageRepo.sumsBySource(filter), (rows) => {
        const groups = rows.map((row) => ({ key: row.source, source: row.source, ...counted(row) }))
        return { ...framed(filter, groups), groupBy: "source" as const, groups }
      })

    const byUser = (filter: UsageFilter): Effect.Effect<UsageByUser> =>
      Effect.map(usageRepo.sumsByUser(filter), (rows) => {
        const groups = rows.map((row) => ({
          key: row.userId,
          userId: row.userId,
          username: row.username,
          ...counted(row)
        }))
        return { ...framed(filter, groups), groupBy: "user" as const, groups }
      })

    const reports = { model: byModel, day: byDay, source: bySource, user: byUser } as const

    /**
     * The caller's own usage, chat and gateway, every key and session of theirs. Like the per-key report
     * it needs `keys:manage`: a session, or a key allowed to manage its owner's keys (what a key that may
     * only use models has spent is not for that key to read).
     */
    const myUsage = (query: MyUsageQuery): Effect.Effect<MyUsage, Forbidden | ValidationError, CurrentActor> =>
      Effect.gen(function*() {
        const actor = yield* requirePermission("keys:manage")
        const filter = { from: query.from, to: query.to, userId: actor.userId }
        yield* checkRange(filter)
        return yield* reports[query.groupBy](filter)
      }).pipe(Effect.withSpan("Gateway.myUsage"))

    /** Every user's usage, or `userId`'s: for those who administer users (`admin:users`). */
    const usageReport = (
      query: UsageReportQuery
    ): Effect.Effect<UsageReport, Forbidden | ValidationError, CurrentActor> =>
      Effect.gen(function*() {
        yield* requirePermission("admin:users")
        const filter = { from: query.from, to: query.to, userId: query.userId }
        yield* checkRange(filter)
        return yield* reports[query.groupBy](filter)
      }).pipe(Effect.withSpan("Gateway.usageReport"))

    /** The caller's token budget this period; anyone may read their own (it says what their next answer meets). */
    const myBudget: Effect.Effect<TokenBudget, never, CurrentActor> = Effect.gen(function*() {
      const budget = yield* rateLimits.budgetOf(yield* CurrentActor)
      return new TokenBudget({
        tokens: budget.tokens,
        spent: budget.spent,
        remaining: budget.tokens === null ? null : Math.max(0, budget.tokens - budget.spent),
        exempt: budget.exempt,
        key: budget.key === null
          ? null
          : { ...budget.key, remaining: Math.max(0, budget.key.tokens - budget.key.spent) },
        period: budget.period,
        periodStart: DateTime.unsafeMake(budget.start),
        renewsAt: DateTime.unsafeMake(budget.end)
      })
    }).pipe(Effect.withSpan("Gateway.myBudget"))

    return {
      listModels,
      retrieveModel,
      complete,
      stream,
      createMessage,
      streamMessage,
      countTokens,
      listModelInfos,
      retrieveModelInfo,
      embed,
      keyUsage,
      myUsage,
      myBudget,
      usageReport
    } as const
  })
}) {}
