/**
 * Anthropic's Messages API in front of every provider: a `POST /v1/messages` request translated
 * into the `ChatRequest` the OpenAI-compatible route builds too (system prompt, turns, tool calls
 * and results, images, generation parameters, tools and tool choice), and the provider's answer
 * back into an Anthropic `message` or its stream events. A `count_tokens` request is translated
 * the same way, up to its prompt (`messagesPrompt`). Everything else (the model's name, the
 * key's checks, limits, usage, failures) is the gateway's one code path (`Gateway.ts`).
 */
import { Clock, Duration, Effect, Either, Option, type Ref, Schedule, Stream } from "effect"
import type { Answer, ReportedUsage, Target } from "../Gateway.js"
import type { ProviderFailure } from "../Models/Errors.js"
import { type ChatChunk, type ChatMessage, type ChatRequest, type FinishReason, offerTools } from "../Providers/Chat.js"
import { argumentsObject } from "../Providers/Client.js"
import type {
  AssistantBlock,
  ContentBlock,
  CountTokensRequest,
  Message,
  MessageParam,
  MessagesRequest,
  MessageStreamEvent,
  StopReason,
  ToolChoice,
  UserBlock
} from "./MessagesSchemas.js"
import { InvalidRequest } from "./Schemas.js"

/** A string, or the text of text blocks (one per line). */
const textOf = (content: string | ReadonlyArray<{ readonly type: string; readonly text?: string }> | undefined) =>
  content === undefined
    ? ""
    : typeof content === "string"
    ? content
    : content.flatMap((block) => block.type === "text" && block.text !== undefined ? [block.text] : []).join("\n")

/**
 * A user turn: its tool results first, each a tool message answering its call (Anthropic puts them
 * first in the turn), then what the user wrote and showed, if anything.
 */
const userMessages = (content: string | ReadonlyArray<UserBlock>): ReadonlyArray<ChatMessage> => {
  if (typeof content === "string") return [{ role: "user", content }]
  const results = content.flatMap((block): Array<ChatMessage> =>
    block.type === "tool_result"
      ? [{ role: "tool", content: textOf(block.content), toolCallId: block.tool_use_id }]
      : []
  )
  const images = content.flatMap((block) =>
    block.type === "image" ? [{ mediaType: block.source.media_type, data: block.source.data }] : []
  )
  const text = textOf(content)
  const said = text.length > 0 || images.length > 0 || results.length === 0
  return [
    ...results,
    ...(said ? [{ role: "user" as const, content: text, ...(images.length > 0 ? { images } : {}) }] : [])
  ]
}

/** An assistant turn: its text and the tools it called (earlier reasoning blocks are left out). */
const assistantMessage = (content: string | ReadonlyArray<AssistantBlock>): ChatMessage => {
  if (typeof content === "string") return { role: "assistant", content }
  const toolCalls = content.flatMap((block) =>
    block.type === "tool_use" ? [{ id: block.id, name: block.name, arguments: JSON.stringify(block.input) }] : []
  )
  return { role: "assistant", content: textOf(content), ...(toolCalls.length > 0 ? { toolCalls } : {}) }
}

const toChatMessages = (message: MessageParam): ReadonlyArray<ChatMessage> => {
  switch (message.role) {
    case "system":
      return [{ role: "system", content: textOf(message.content) }]
    case "user":
      return userMessages(message.content)
    case "assistant":
      return [assistantMessage(message.content)]
  }
}

const toolChoiceOf = (choice: ToolChoice) =>
  choice.type === "tool" ? { name: choice.name } : choice.type === "any" ? "required" as const : choice.type

/**
 * `top_k` for the providers that have it, where each takes it (Ollama among its `options`); OpenAI's
 * API has none, so it is left out there, as the OpenAI route leaves out what a provider would misread.
 */
const topKFor = (target: Target, topK: number | undefined): Record<string, unknown> | undefined =>
  topK === undefined
    ? undefined
    : target.provider.kind === "anthropic"
    ? { top_k: topK }
    : target.provider.kind === "ollama"
    ? { options: { top_k: topK } }
    : undefined

/** What a request's prompt is made of, for an answer and for a count of its tokens alike. */
export type Prompt = Pick<ChatRequest, "messages" | "tools" | "toolChoice">

/**
 * The prompt of a request (`/v1/messages` or its `count_tokens`): the system prompt and the turns as
 * chat messages, the tools offered. Checks what the schema cannot see (a named tool must be one of
 * the tools).
 */
export const messagesPrompt = (body: CountTokensRequest): Effect.Effect<Prompt, InvalidRequest> => {
  const choice = body.tool_choice
  const offered = offerTools(
    (body.tools ?? []).map((tool) => ({
      name: tool.name,
      description: tool.description,
      parameters: tool.input_schema
    })),
    choice === undefined ? undefined : toolChoiceOf(choice)
  )
  if (Either.isLeft(offered)) {
    return Effect.fail(
      new InvalidRequest({
        message: offered.left === "needs-tools"
          ? `tool_choice: '${choice?.type}' requires tools to be specified`
          : `tool_choice: the tool '${choice?.type === "tool" ? choice.name : ""}' is not among the tools`,
        param: "tool_choice"
      })
    )
  }
  const system = body.system === undefined ? "" : textOf(body.system)
  return Effect.succeed({
    messages: [
      ...(system.length > 0 ? [{ role: "system" as const, content: system }] : []),
      ...body.messages.flatMap(toChatMessages)
    ],
    ...offered.right
  })
}

/** The provider request of `/v1/messages`: its prompt (`messagesPrompt`) and how to answer it. */
export const messagesChatRequest = (
  body: MessagesRequest,
  target: Target
): Effect.Effect<ChatRequest, InvalidRequest> =>
  Effect.map(messagesPrompt(body), (prompt) => {
    const extra = topKFor(target, body.top_k)
    return {
      model: target.model.providerModel,
      ...prompt,
      maxTokens: body.max_tokens,
      ...(body.temperature !== undefined ? { temperature: body.temperature } : {}),
      ...(body.top_p !== undefined ? { topP: body.top_p } : {}),
      ...(body.stop_sequences !== undefined && body.stop_sequences.length > 0 ? { stop: body.stop_sequences } : {}),
      ...(extra !== undefined ? { extra } : {})
    }
  })

/**
 * Anthropic's stop reason: a stop with tool calls is `tool_use` (some providers say "stop" then),
 * a stop at one of the stop sequences `stop_sequence` when the provider said which (Anthropic does;
 * OpenAI's and Ollama's APIs do not, so theirs read as `end_turn`).
 */
const stopReasonOf = (reason: FinishReason, calledTools: boolean, stopSequence: string | undefined): StopReason => {
  switch (reason) {
    case "length":
      return "max_tokens"
    case "tool_calls":
      return "tool_use"
    case "content_filter":
      return "refusal"
    case "stop":
      return calledTools ? "tool_use" : stopSequence !== undefined ? "stop_sequence" : "end_turn"
  }
}

const usageOf = (usage: Option.Option<ReportedUsage>) =>
  Option.match(usage, {
    onNone: () => ({ input_tokens: 0, output_tokens: 0 }),
    onSome: (reported) => ({ input_tokens: reported.promptTokens, output_tokens: reported.completionTokens })
  })

/** A whole answer as Anthropic's `message`: its text, then its tool calls with their input as objects. */
export const messageOf = (id: string, model: string, answer: Answer): Message => {
  const stopReason = stopReasonOf(answer.finish, answer.toolCalls.length > 0, answer.stopSequence)
  const content: Array<ContentBlock> = [
    ...(answer.text.length > 0 ? [{ type: "text" as const, text: answer.text }] : []),
    ...answer.toolCalls.map((call) => ({
      type: "tool_use" as const,
      id: call.id,
      name: call.name,
      input: argumentsObject(call.arguments)
    }))
  ]
  return {
    id,
    type: "message",
    role: "assistant",
    model,
    content,
    stop_reason: stopReason,
    stop_sequence: stopReason === "stop_sequence" ? answer.stopSequence ?? null : null,
    usage: usageOf(answer.usage)
  }
}

/** How long a stream may stay silent before a `ping` is sent (checked every second). */
export const pingAfter = Duration.seconds(5)

/** The content block being written, by its index among the answer's blocks. */
interface OpenBlock {
  readonly index: number
  readonly kind: "text" | "tool"
  /** A tool block's call, by its index among the answer's tool calls. */
  readonly call?: number
}

/** A block's content: text, or a tool call (its input as JSON text). */
type BlockContent =
  | { readonly kind: "text"; text: string }
  | { readonly kind: "tool"; readonly id: string; readonly name: string; input: string }

/** A block held back while a tool call's block is open: written whole when that one closes. */
type HeldBlock = BlockContent & { readonly call?: number }

/** A block's start, and its first piece (if any) as a delta. */
const blockOpening = (index: number, block: BlockContent): Array<MessageStreamEvent> => [
  {
    type: "content_block_start",
    index,
    content_block: block.kind === "text"
      ? { type: "text", text: "" }
      : { type: "tool_use", id: block.id, name: block.name, input: {} }
  },
  ...blockDelta(index, block.kind, block.kind === "text" ? block.text : block.input)
]

/** More of a block: a text or JSON piece (nothing for an empty one). */
const blockDelta = (index: number, kind: BlockContent["kind"], piece: string): Array<MessageStreamEvent> =>
  piece.length === 0 ? [] : [{
    type: "content_block_delta",
    index,
    delta: kind === "text" ? { type: "text_delta", text: piece } : { type: "input_json_delta", partial_json: piece }
  }]

/**
 * The answer as Anthropic streams it: `message_start` (empty content, usage to come), a `ping`,
 * each text run and tool call as a content block (`content_block_start`, its deltas,
 * `content_block_stop`), then `message_delta` (the stop reason and the usage, input tokens
 * included since most providers report them only at the end) and `message_stop`. A `ping` goes
 * out whenever nothing else has for `pingAfter`.
 *
 * Anthropic's blocks follow one another, but a provider may interleave the pieces of several tool
 * calls (or send text between a call's pieces): a stopped block cannot take more. So once a tool
 * call's block is open, it stays open until the answer ends, and whatever else comes meanwhile
 * (text, other calls) is held and written after it, each a whole block, in the order it began.
 */
export const messageEvents = (options: {
  readonly id: string
  readonly model: string
  readonly upstream: Stream.Stream<ChatChunk, ProviderFailure>
  readonly usage: Ref.Ref<Option.Option<ReportedUsage>>
  readonly toolUseId: Effect.Effect<string>
}): Stream.Stream<MessageStreamEvent, ProviderFailure> => {
  // One stream per request, consumed once: plain state is enough.
  let next = 0
  let open: OpenBlock | null = null
  const held: Array<HeldBlock> = []
  /** The answer's tool calls seen so far, by their index among its calls. */
  const calls = new Set<number>()
  let finish: Extract<ChatChunk, { readonly _tag: "finish" }> | null = null
  /** When the last event went out (epoch milliseconds). */
  let lastSent = 0
  const sent = Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sync(() => (lastSent = now)))

  const close = (): Array<MessageStreamEvent> => {
    if (open === null) return []
    const { index } = open
    open = null
    return [{ type: "content_block_stop", index }]
  }
  /** Closes the open block, and opens `block` in its place. */
  const begin = (block: BlockContent, call?: number): Array<MessageStreamEvent> => {
    const events = close()
    const index = next++
    open = { index, kind: block.kind, ...(call !== undefined ? { call } : {}) }
    return [...events, ...blockOpening(index, block)]
  }
  /** Closes the open block, then writes the held ones, each whole. */
  const closeAll = (): Array<MessageStreamEvent> => {
    const events = close()
    for (const block of held.splice(0)) {
      const index = next++
      events.push(...blockOpening(index, block), { type: "content_block_stop", index })
    }
    return events
  }
  /** Whether what comes now (but the open call's own pieces) must wait: a tool call's block is open. */
  const holding = () => open?.kind === "tool"

  const translate = (chunk: ChatChunk): Effect.Effect<ReadonlyArray<MessageStreamEvent>> => {
    if (finish !== null) return Effect.succeed([])
    switch (chunk._tag) {
      case "text": {
        if (chunk.text.length === 0) return Effect.succeed([])
        if (holding()) {
          const last = held.at(-1)
          if (last?.kind === "text") last.text += chunk.text
          else held.push({ kind: "text", text: chunk.text })
          return Effect.succeed([])
        }
        return Effect.succeed(
          open?.kind === "text"
            ? blockDelta(open.index, "text", chunk.text)
            : begin({ kind: "text", text: chunk.text })
        )
      }
      case "tool-call":
        return Effect.gen(function*() {
          if (open?.call === chunk.index) return blockDelta(open.index, "tool", chunk.arguments)
          if (calls.has(chunk.index)) {
            const block = held.find((candidate) => candidate.kind === "tool" && candidate.call === chunk.index)
            if (block?.kind === "tool") block.input += chunk.arguments
            return []
          }
          calls.add(chunk.index)
          const block = {
            kind: "tool" as const,
            id: chunk.id ?? (yield* options.toolUseId),
            name: chunk.name ?? "",
            input: chunk.arguments
          }
          if (holding()) {
            held.push({ ...block, call: chunk.index })
            return []
          }
          return begin(block, chunk.index)
        })
      case "usage":
        return Effect.succeed([])
      case "finish":
        finish = chunk
        return Effect.succeed(closeAll())
    }
  }

  const ending = Effect.map(options.usage.get, (usage): ReadonlyArray<MessageStreamEvent> => {
    const stopReason = stopReasonOf(finish?.reason ?? "stop", calls.size > 0, finish?.stopSequence)
    return [
      ...closeAll(),
      {
        type: "message_delta",
        delta: {
          stop_reason: stopReason,
          stop_sequence: stopReason === "stop_sequence" ? finish?.stopSequence ?? null : null
        },
        usage: usageOf(usage)
      },
      { type: "message_stop" }
    ]
  })

  const start: Message = {
    id: options.id,
    type: "message",
    role: "assistant",
    model: options.model,
    content: [],
    stop_reason: null,
    stop_sequence: null,
    usage: { input_tokens: 0, output_tokens: 0 }
  }
  const events = Stream.fromIterable<MessageStreamEvent>([{ type: "message_start", message: start }, { type: "ping" }])
    .pipe(
      Stream.concat(Stream.mapConcatEffect(options.upstream, translate)),
      Stream.concat(Stream.fromIterableEffect(ending)),
      Stream.tap(() => sent)
    )
  const ping: Effect.Effect<Option.Option<MessageStreamEvent>> = Effect.flatMap(
    Clock.currentTimeMillis,
    (now) =>
      now - lastSent < Duration.toMillis(pingAfter)
        ? Effect.succeedNone
        : Effect.as(sent, Option.some<MessageStreamEvent>({ type: "ping" }))
  )
  const pings = Stream.repeatEffectWithSchedule(ping, Schedule.spaced("1 second")).pipe(
    Stream.filterMap((event) => event)
  )
  // Counted from the start, where `message_start` goes out.
  return Stream.unwrap(Effect.as(sent, Stream.merge(events, pings, { haltStrategy: "left" })))
}
