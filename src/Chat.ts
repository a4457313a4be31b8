/**
 * The chat engine: a message in, the model's answer out, streamed, and never lost.
 *
 * Stateless between requests: each turn reads the conversation, its preset and
 * its active branch from the database, so any instance can serve any turn. A
 * turn first stores the user's message and an empty `streaming` answer (one
 * transaction), then calls the provider. The generation runs in the engine's
 * own scope, not in the request's fiber: a client going away stops only its
 * view of the stream. The answer's text is flushed every `CHAT_FLUSH_INTERVAL`
 * and it ends `complete`, `cancelled`, `error` (provider failure) or
 * `incomplete` (shutdown); an instance that crashed leaves answers
 * `streaming`, which any instance marks `incomplete` once they have gone
 * `CHAT_STREAM_LEASE` without a write.
 *
 * While an answer is written, its events stay in memory for the clients
 * following it (the request that started it, and any that resume it with
 * `Last-Event-ID`), and for `CHAT_RESUME_RETENTION` after it ends.
 */
import * as PersistedQueue from "@effect/experimental/PersistedQueue"
import {
  Cause,
  Clock,
  Context,
  DateTime,
  Deferred,
  Duration,
  Effect,
  Either,
  Exit,
  type Fiber,
  FiberId,
  FiberSet,
  Option,
  Schedule,
  Schema,
  Scope,
  Stream
} from "effect"
import { requirePermission } from "./Auth/Policy.js"
import { RateLimits } from "./Auth/RateLimits.js"
import { AnswerRepo, type FinalStatus } from "./Chat/AnswerRepo.js"
import type {
  ChatEvent,
  ChatPayload,
  ContinuePayload,
  NewChatPayload,
  RegeneratePayload,
  ThreadChatPayload,
  ToolChoice,
  ToolDefinition
} from "./Chat/Api.js"
import { ChatResult } from "./Chat/Api.js"
import {
  answerReserve,
  fillsContext,
  fitToContext,
  nothingAnswered,
  tally,
  toChatMessages,
  type TokenCounts,
  toolTokens,
  usageToCount
} from "./Chat/Context.js"
import { AnswerRelay } from "./Chat/Relay.js"
import { AppConfig } from "./Config.js"
import { Conversations } from "./Conversations.js"
import type { Actor, CurrentActor } from "./Domain/Actor.js"
import type { Conversation, MessageView, ToolCall } from "./Domain/Conversation.js"
import { type Forbidden, invalid, NotFound, type ValidationError } from "./Domain/Errors.js"
import type { JsonObject } from "./Domain/Fields.js"
import {
  ApiKeyId,
  ConversationId,
  type FileId,
  type LlmModelId,
  MessageId,
  type ModelConfigId,
  type ThreadId,
  type UserId
} from "./Domain/Ids.js"
import type { ModelConfig } from "./Domain/Model.js"
import { type Attachment, type AttachmentContents, Attachments } from "./Files/Attachments.js"
import { FilePassages } from "./Files/Passages.js"
import { UsageRepo } from "./Gateway/UsageRepo.js"
import { JobFailed, runWorkers } from "./Jobs.js"
import {
  chatAnswersEnded,
  chatAnswersStarted,
  chatAnswersStreaming,
  chatFirstToken,
  chatTokens,
  labels
} from "./Metrics.js"
import { ModelRegistry, type ResolvedModel } from "./Models.js"
import { complete, recordCompletionUsage } from "./Models/Completion.js"
import type { ProviderFailure } from "./Models/Errors.js"
import { ConversationTitleEvent, EventHub } from "./Models/Events.js"
import { ModelConfigsRepo } from "./Models/ModelConfigsRepo.js"
import { type ChatChunk, type ChatRequest, offerTools } from "./Providers/Chat.js"
import type { AnswerFeed } from "./Providers/Client.js"
import { storedNow } from "./Sql.js"

/** What a turn asks for: a message (or none, to answer the leaf again) and the model to use. */
export interface TurnInput {
  readonly content?: string | undefined
  readonly metadata?: JsonObject | undefined
  readonly fileIds?: ReadonlyArray<FileId> | undefined
  readonly parentId?: MessageId | undefined
  readonly modelId?: LlmModelId | undefined
  readonly modelConfigId?: ModelConfigId | undefined
  readonly tools?: ReadonlyArray<ToolDefinition> | undefined
  readonly toolChoice?: ToolChoice | undefined
}

/** What a turn takes from its conversation, if it has one: the model and preset it defaults to. */
interface Defaults {
  readonly modelId: LlmModelId | null
  readonly modelConfigId: ModelConfigId | null
}

/** What a turn has stored before its provider is called, and what the answer follows (root first). */
interface Opened {
  readonly conversation: Conversation
  readonly prepared: Prepared
  readonly question: MessageView | null
  readonly answer: MessageView
  readonly branch: ReadonlyArray<MessageView>
}

/** A turn's model (the answer records its id and name) and preset, and how much of the branch it sends. */
interface Prepared {
  readonly model: { readonly id: LlmModelId; readonly name: string }
  readonly resolved: ResolvedModel
  readonly preset: Option.Option<ModelConfig>
  readonly tooling: Pick<ChatRequest, "tools" | "toolChoice">
  readonly enough: (newestFirst: ReadonlyArray<MessageView>) => boolean
}

/** Events that arrived together; empty when there is nothing new (a keep-alive). */
export type EventBatch = ReadonlyArray<ChatEvent>

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never

/** How often a quiet stream gets a keep-alive. */
const keepAlive = Duration.seconds(15)
const keepAliveEvery = (pollMs: number) => Math.max(1, Math.round(Duration.toMillis(keepAlive) / pollMs))

/** How an answer ended, for a client waiting for it. */
interface Outcome {
  readonly answer: MessageView
  readonly failure: Option.Option<ProviderFailure>
}

/** An answer being generated by this instance. */
interface Generation {
  readonly conversationId: ConversationId
  readonly answerId: MessageId
  /** Every event so far: an event's id is its position here, from 1. */
  readonly events: Array<ChatEvent>
  /** Called, and forgotten, whenever followers should look again. */
  listeners: Array<() => void>
  readonly outcome: Deferred.Deferred<Outcome>
  /** The answer so far: its text in pieces, and its tool calls by index. */
  readonly parts: Array<string>
  readonly calls: Array<{ id: string; name: string; arguments: string }>
  /** Counts the changes to the answer; `flushedVersion` is the one last written. */
  version: number
  flushedVersion: number
  /** When the answer was last written (epoch ms): a live answer is written at least every third of the lease. */
  lastWrite: number
  cancelRequested: boolean
  /**
   * Stops the answer (it then ends `cancelled` if `cancelRequested`, else `incomplete`); null once
   * it is ending. While the provider is called this interrupts the call's fiber; once the answer
   * streams, no fiber runs for it: its chunks come from the socket's callbacks.
   */
  stop: (() => void) | null
  /** Set once its end is being stored: the flusher leaves it alone from then on. */
  ending: boolean
  /** When it ended (epoch ms): it is forgotten `CHAT_RESUME_RETENTION` later. */
  endedAt: number | null
}

/** The events of an answer this instance is writing, as its followers read them. */
export interface LiveEvents {
  /**
   * The events after the first `cursor` (an event's id is its position, from 1), and whether
   * nothing more will come. A follower that has everything gets the `done` event again.
   */
  readonly after: (cursor: number) => { readonly batch: EventBatch; readonly over: boolean }
  /** Calls `listener` once, at the next change (new events, the end, a keep-alive); the function returned cancels. */
  readonly onChange: (listener: () => void) => () => void
}

/**
 * An answer's events for a follower: live from this instance's memory; or, when another instance
 * writes it, a stream of batches relayed from that instance (with `REDIS_URL`) or polled from the
 * database.
 */
export type Following =
  | { readonly _tag: "Live"; readonly events: LiveEvents; readonly after: number }
  | { readonly _tag: "Streamed"; readonly batches: Stream.Stream<EventBatch> }

/** What a follower reads as a stream of batches; an empty batch means "nothing new yet" (a keep-alive). */
export const followingStream = (following: Following): Stream.Stream<EventBatch> => {
  if (following._tag === "Streamed") return following.batches
  const { events } = following
  const read = (cursor: number): readonly [EventBatch, Option.Option<number>] => {
    const { batch, over } = events.after(cursor)
    return [batch, over ? Option.none() : Option.some(cursor + batch.length)]
  }
  return Stream.paginateEffect(following.after, (cursor) => {
    const now = events.after(cursor)
    return now.batch.length > 0 || now.over
      ? Effect.succeed(read(cursor))
      : Effect.async<readonly [EventBatch, Option.Option<number>]>((resume) => {
        const cancel = events.onChange(() => resume(Effect.sync(() => read(cursor))))
        return Effect.sync(cancel)
      })
  })
}

/** A turn that has started: its stored messages, its events, and its outcome. */
export interface Turn {
  readonly conversationId: ConversationId
  /** The answer's events, from its first. */
  readonly events: Following
  /** The finished answer; a provider failure fails it (the answer is stored as `error` all the same). */
  readonly result: Effect.Effect<ChatResult, ProviderFailure>
}

/**
 * Resumes after the I/O callbacks already due (`setImmediate`): what Node has queued for the next
 * tick, such as a request given its socket, goes first. Effect's own yield resumes in a microtask,
 * before them.
 */
const afterPendingIo: Effect.Effect<void> = Effect.async<void>((resume) => {
  const handle = setImmediate(() => resume(Effect.void))
  return Effect.sync(() => clearImmediate(handle))
})

const titlePrompt = "Write a title of at most six words for a conversation that starts with the user's message " +
  "below. Answer with the title only: no quotes, no punctuation at the end."

/** A title from a model's answer: its first line, without quotes or a "Title:" label, at most 80 characters. */
export const cleanTitle = (text: string): string =>
  (text.trim().split("\n")[0] ?? "")
    .replace(/^title:\s*/i, "")
    .replace(/^["'“”*#\s]+|["'“”*\s.]+$/g, "")
    .slice(0, 80)
    .trim()

/** The queue of titles to write, and its jobs: a new conversation's first answer, once it has ended. */
export const titleQueue = "conversation-title"
export const TitleJob = Schema.Struct({
  conversationId: ConversationId,
  answerId: MessageId,
  /** The API key the turn came with, whose usage the title's tokens count in (none: a session, or recovered). */
  apiKeyId: Schema.optional(ApiKeyId)
})

/** A title from the user's first message, when the model gives none. */
export const fallbackTitle = (question: string): string => {
  const line = question.trim().split("\n")[0]?.trim() ?? ""
  return line.length <= 60 ? line : `${line.slice(0, 59).trimEnd()}…`
}

/**
 * The tools a turn offers the model, as the provider request holds them; a choice that needs tools
 * (or names one) must come with them.
 */
const toolingOf = (input: TurnInput): Effect.Effect<Pick<ChatRequest, "tools" | "toolChoice">, ValidationError> =>
  Either.match(offerTools(input.tools ?? [], input.toolChoice), {
    onLeft: (problem) =>
      problem === "needs-tools"
        ? invalid(["toolChoice"], "This tool choice needs tools")
        : invalid(
          ["toolChoice", "name"],
          `No tool named "${typeof input.toolChoice === "object" ? input.toolChoice.name : ""}" among the tools`
        ),
    onRight: Effect.succeed
  })

export class ChatEngine extends Effect.Service<ChatEngine>()("Chat/ChatEngine", {
  scoped: Effect.gen(function*() {
    const { chat: settings, jobs: jobSettings } = yield* AppConfig
    const conversations = yield* Conversations
    const registry = yield* ModelRegistry
    const configs = yield* ModelConfigsRepo
    const answers = yield* AnswerRepo
    const usageRecords = yield* UsageRepo
    const events = yield* EventHub
    const rateLimits = yield* RateLimits
    const relay = yield* AnswerRelay
    const attachments = yield* Attachments
    const passages = yield* FilePassages
    const titleJobs = yield* PersistedQueue.make({ name: titleQueue, schema: TitleJob })
    const scope = yield* Effect.scope
    // Generations run apart from the requests that start them, from a runtime of their own: a
    // request's fiber refs (its span, log annotations, client) are not copied into each one, and
    // its context is empty (a generation needs no service it has not been given), so that adding
    // a scope to it copies nothing big. This keeps an open answer small. Closing the engine's
    // scope interrupts the generations still running.
    const generations = yield* FiberSet.make<void, never>()
    const runGeneration = yield* FiberSet.runtime(generations)<never>().pipe(
      Effect.mapInputContext((_: Context.Context<never>) => Context.empty())
    )

    const live = new Map<MessageId, Generation>()
    // At shutdown, before the generations' fiber set closes: the answers still being written are
    // stopped, and their ends (`incomplete`) stored.
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        const generations = [...live.values()]
        for (const generation of generations) generation.stop?.()
        return Effect.forEach(generations, ended, { discard: true })
      })
    )
    const flushEvery = Duration.toMillis(settings.flushInterval)
    const heartbeatEvery = Duration.toMillis(settings.streamLease) / 3

    /** The answers this instance is writing, for the metrics. */
    let streaming = 0
    const countStreaming = (change: number) => {
      streaming += change
      chatAnswersStreaming.unsafeUpdate(streaming, [])
    }

    // --- choosing the model and what it is sent

    /** The model for a turn: the request's, the conversation's, the preset's, else the first usable one. */
    const chooseModel = (
      input: TurnInput,
      conversation: Defaults | null,
      preset: Option.Option<ModelConfig>
    ): Effect.Effect<ResolvedModel, ValidationError | Forbidden, CurrentActor> =>
      registry.usableModel(input.modelId ?? conversation?.modelId ?? Option.getOrNull(preset)?.modelId ?? null)

    /** The preset for a turn: the request's (which must exist), else the conversation's. */
    const presetFor = (actor: Actor, input: TurnInput, conversation: Defaults | null) =>
      Effect.gen(function*() {
        const id = input.modelConfigId ?? conversation?.modelConfigId ?? null
        const preset = id === null ? Option.none<ModelConfig>() : yield* configs.findVisible(id, actor.userId)
        if (input.modelConfigId !== undefined && Option.isNone(preset)) {
          return yield* invalid(["modelConfigId"], "No such model config")
        }
        return preset
      })

    /** The tokens of the model's window that the system prompt and the history may take. */
    const promptBudget = (resolved: ResolvedModel, config: ModelConfig | null) => {
      const window = resolved.model.contextWindow ?? settings.defaultContextWindow
      return window - answerReserve(window, config?.maxTokens ?? null)
    }

    /**
     * What a turn is answered with: the preset, then the model, from the request or the conversation;
     * and how much of the branch to read (what fits in the model's window).
     */
    const prepareTurn = (actor: Actor, input: TurnInput, conversation: Defaults | null) =>
      Effect.gen(function*() {
        const tooling = yield* toolingOf(input)
        const preset = yield* presetFor(actor, input, conversation)
        const resolved = yield* chooseModel(input, conversation, preset)
        const config = Option.getOrNull(preset)
        return {
          model: { id: resolved.model.id, name: resolved.model.displayName },
          resolved,
          preset,
          tooling,
          enough: fillsContext(config?.systemPrompt ?? null, promptBudget(resolved, config) - toolTokens(tooling))
        } satisfies Prepared
      })

    /** The request for the provider: the preset's parameters, the tools, and `branch` fitted to the window. */
    const buildRequest = (
      { preset, resolved, tooling }: Prepared,
      branch: ReadonlyArray<MessageView>,
      contents: AttachmentContents
    ): ChatRequest => {
      const config = Option.getOrNull(preset)
      const maxTokens = config?.maxTokens ?? null
      const messages = fitToContext(
        config?.systemPrompt ?? null,
        toChatMessages(branch, contents),
        promptBudget(resolved, config) - toolTokens(tooling)
      )
      return {
        model: resolved.model.providerModel,
        messages,
        ...tooling,
        ...(config?.temperature != null ? { temperature: config.temperature } : {}),
        ...(config?.topP != null ? { topP: config.topP } : {}),
        ...(maxTokens !== null ? { maxTokens } : {}),
        ...(config && config.stop.length > 0 ? { stop: config.stop } : {}),
        ...(config && Object.keys(config.extraParams).length > 0 ? { extra: config.extraParams } : {})
      }
    }

    // --- following a generation

    /** Waits until the answer's end is stored (or could not be). */
    const ended = (generation: Generation) => Effect.exit(Deferred.await(generation.outcome))

    /** A generation's events as its followers read them. */
    const liveEvents = (generation: Generation): LiveEvents => ({
      after: (cursor) => {
        const events = generation.events
        if (cursor >= events.length) {
          // Over and nothing left: the end again (a client always ends on `done`), unless it could not be stored.
          const last = events.at(-1)
          return last?._tag === "done"
            ? { batch: [last], over: true }
            : { batch: [], over: generation.endedAt !== null }
        }
        const batch = events.slice(cursor)
        return { batch, over: batch.at(-1)?._tag === "done" }
      },
      onChange: (listener) => {
        generation.listeners.push(listener)
        return () => {
          const index = generation.listeners.indexOf(listener)
          if (index >= 0) generation.listeners.splice(index, 1)
        }
      }
    })

    /** An answer written by another instance: snapshots of its text, read from the database, until it ends. */
    const pollStored = (conversationId: ConversationId, first: MessageView, after: number): Stream.Stream<EventBatch> =>
      Stream.suspend(() => {
        let id = after
        let content: string | null = null
        let quiet = 0
        const reads = Stream.repeatEffectWithSchedule(
          conversations.readBack(conversationId, first.id),
          Schedule.spaced(Duration.millis(flushEvery))
        )
        return Stream.concat(Stream.succeed(first), Stream.drop(reads, 1)).pipe(
          Stream.filterMap((message): Option.Option<EventBatch> => {
            if (message.status !== "streaming") return Option.some([{ _tag: "done", id: ++id, message }])
            if (message.content === content) {
              return ++quiet % keepAliveEvery(flushEvery) === 0 ? Option.some([]) : Option.none()
            }
            content = message.content
            quiet = 0
            return Option.some([{ _tag: "snapshot", id: ++id, content }])
          }),
          Stream.takeUntil((batch) => batch.at(-1)?._tag === "done")
        )
      })

    // --- generating

    /** Wakes the generation's followers (with new events, or for a keep-alive). */
    const wake = (generation: Generation) => {
      const listeners = generation.listeners
      if (listeners.length === 0) return
      generation.listeners = []
      for (const listener of listeners) listener()
    }

    /** Adds an event, numbered by its position; followers see it at their next wake-up. */
    const record = (generation: Generation, fields: DistributiveOmit<ChatEvent, "id">) => {
      generation.events.push({ ...fields, id: generation.events.length + 1 } as ChatEvent)
    }

    const emit = (generation: Generation, fields: DistributiveOmit<ChatEvent, "id">) =>
      Effect.sync(() => {
        record(generation, fields)
        wake(generation)
      })

    const textOf = (generation: Generation) => generation.parts.join("")
    const toolCallsOf = (generation: Generation): ReadonlyArray<ToolCall> =>
      generation.calls.filter((call) => call !== undefined)

    /**
     * Streams the provider's answer into the stored message, and ends it whatever happens; then
     * runs `after`. A fiber of the engine's calls the provider; once the answer has started, its
     * chunks are taken in from the socket's callbacks and no fiber waits for it: another stores its
     * end.
     */
    const generate = (
      actor: Actor,
      generation: Generation,
      answer: MessageView,
      resolved: ResolvedModel,
      request: ChatRequest,
      after: Effect.Effect<void>
    ): void => {
      let usage: TokenCounts | null = null
      const answered = nothingAnswered()
      const startedAt = Date.now()
      chatAnswersStarted.unsafeUpdate(1, [])
      countStreaming(1)

      /** Takes in one chunk of the answer; true when followers have something new. */
      const take = (chunk: ChatChunk): boolean => {
        tally(answered, chunk)
        const event = (fields: DistributiveOmit<ChatEvent, "id">) => record(generation, fields)
        switch (chunk._tag) {
          case "text":
            if (chunk.text.length === 0) return false
            generation.parts.push(chunk.text)
            generation.version++
            event({ _tag: "delta", text: chunk.text })
            return true
          case "tool-call": {
            const call = generation.calls[chunk.index] ??= { id: "", name: "", arguments: "" }
            if (chunk.id) call.id = chunk.id
            if (chunk.name) call.name += chunk.name
            call.arguments += chunk.arguments
            generation.version++
            event({
              _tag: "tool_call",
              index: chunk.index,
              ...(chunk.id ? { callId: chunk.id } : {}),
              ...(chunk.name ? { name: chunk.name } : {}),
              arguments: chunk.arguments
            })
            return true
          }
          case "usage":
            usage = { promptTokens: chunk.promptTokens, completionTokens: chunk.completionTokens }
            event({ _tag: "usage", ...usage })
            return true
          case "finish":
            return false
        }
      }

      // The chunks are taken in as the provider's socket delivers them, with one wake-up for those
      // that came together. The text is written meanwhile by the engine's flusher (`flushDrafts`).
      let firstToken = true
      const onChunks = (chunks: ReadonlyArray<ChatChunk>) => {
        let added = false
        for (const chunk of chunks) added = take(chunk) || added
        if (added && firstToken) {
          firstToken = false
          chatFirstToken.unsafeUpdate((Date.now() - startedAt) / 1000, [])
        }
        if (added) wake(generation)
      }

      const finish = (exit: Exit.Exit<void, ProviderFailure>) =>
        Effect.gen(function*() {
          generation.ending = true
          const providerFailure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
          const died = Exit.isFailure(exit) && Option.isNone(providerFailure) && !Cause.isInterruptedOnly(exit.cause)
          if (died) {
            yield* Effect.logError("An answer failed unexpectedly", exit.cause).pipe(
              Effect.annotateLogs({ conversationId: generation.conversationId, answerId: answer.id })
            )
          }
          const status: FinalStatus = Exit.isSuccess(exit)
            ? "complete"
            : Option.isSome(providerFailure) || died
            ? "error"
            : generation.cancelRequested
            ? "cancelled"
            : "incomplete"
          const error = Option.isSome(providerFailure)
            ? { _tag: providerFailure.value._tag, message: providerFailure.value.message }
            : died
            ? { _tag: "InternalError", message: "The answer failed unexpectedly" }
            : null
          const stats: TokenCounts | null = usage
          // Budgets count an answer whose usage never came (cancelled, failed midway) by estimate;
          // a cancel counts its prompt even before the first token.
          const counted = usageToCount(request, stats, answered, status === "cancelled")
          chatAnswersEnded.unsafeUpdate(1, labels(["status", status]))
          if (stats !== null) {
            chatTokens.unsafeUpdate(stats.promptTokens, labels(["kind", "prompt"]))
            chatTokens.unsafeUpdate(stats.completionTokens, labels(["kind", "completion"]))
          }
          const ended = yield* answers.finish(
            generation.conversationId,
            answer.id,
            {
              status,
              content: textOf(generation),
              toolCalls: toolCallsOf(generation),
              promptTokens: stats?.promptTokens ?? null,
              completionTokens: stats?.completionTokens ?? null,
              error
            },
            counted === null ? Effect.void : usageRecords.record({
              userId: actor.userId,
              apiKeyId: actor.apiKeyId ?? null,
              modelId: resolved.model.id,
              modelName: resolved.model.providerModel,
              source: "chat",
              ...counted
            })
          )
          // An answer this end did not write (it had ended meanwhile) is read as it is.
          const stored = Option.isSome(ended)
            ? ended.value
            : yield* conversations.readBack(generation.conversationId, answer.id)
          if (error !== null) yield* emit(generation, { _tag: "error", error })
          yield* emit(generation, { _tag: "done", message: stored })
          yield* Deferred.succeed(generation.outcome, { answer: stored, failure: providerFailure })
          generation.endedAt = yield* Clock.currentTimeMillis
        }).pipe(
          // The database failed us (or the conversation was purged meanwhile): whoever waits is told, and
          // the streams end; the answer stays `streaming` until recovery marks it `incomplete`.
          Effect.catchAllCause((cause) =>
            Effect.gen(function*() {
              yield* Effect.logError("An answer could not be stored at its end", cause).pipe(
                Effect.annotateLogs({ conversationId: generation.conversationId, answerId: answer.id })
              )
              yield* Deferred.die(generation.outcome, new Error("The answer could not be stored"))
              generation.endedAt = yield* Clock.currentTimeMillis
              wake(generation)
            })
          ),
          // Kept for resumption until `CHAT_RESUME_RETENTION` is over: only the events are needed.
          Effect.ensuring(Effect.sync(() => {
            generation.parts.length = 0
            generation.calls.length = 0
            countStreaming(-1)
          }))
        )

      /**
       * Ends the answer, once: closes its scope (which ends the request), stores it, then `after`
       * unless it was stopped.
       */
      let over = false
      const end = (scope: Scope.CloseableScope, exit: Exit.Exit<void, ProviderFailure>) => {
        if (over) return
        over = true
        generation.stop = null
        const stopped = Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)
        // No span around the whole answer: it would be held, with its fiber refs, as long as the answer runs.
        runGeneration(Effect.zipRight(
          Effect.uninterruptible(
            Effect.zipRight(Scope.close(scope, exit), Effect.withSpan(finish(exit), "ChatEngine.finish"))
          ),
          stopped ? Effect.void : after
        ))
      }

      const calling = callProvider(resolved, request, (scope, opened) => {
        if (Exit.isFailure(opened)) return end(scope, Exit.asVoid(opened))
        const detach = opened.value.listen(onChunks, (exit) => end(scope, exit))
        if (over) return
        generation.stop = () => {
          detach()
          end(scope, Exit.interrupt(FiberId.none))
        }
      })
      // Started at once, it may be over already (a provider refused at once), or streaming.
      if (!over && generation.stop === null) generation.stop = interrupting(calling)
    }

    /**
     * Calls the provider from a fiber of the engine's, and hands what it answered (the answer's
     * feed, open in `scope`, or why not) to `opened`. Apart from `generate`, so that neither the
     * request (the whole branch) nor the fiber is kept by the answer's callbacks.
     */
    const callProvider = (
      resolved: ResolvedModel,
      request: ChatRequest,
      opened: (scope: Scope.CloseableScope, exit: Exit.Exit<AnswerFeed, ProviderFailure>) => void
    ) =>
      runGeneration(Effect.uninterruptibleMask((restore) =>
        Effect.flatMap(Scope.make(), (scope) =>
          Effect.flatMap(
            Effect.exit(restore(Scope.extend(resolved.client.answer(request), scope))),
            (exit) => Effect.sync(() => opened(scope, exit))
          ))
      ))

    const interrupting = (fiber: Fiber.RuntimeFiber<void>) => () => fiber.unsafeInterruptAsFork(FiberId.none)

    /** Sets a conversation's title if it has none yet, and tells the owner's event sockets (`conversation.title`). */
    const setTitle = (ownerId: UserId, conversationId: ConversationId, title: string) =>
      Effect.gen(function*() {
        if (!(yield* answers.setTitleIfEmpty(conversationId, title))) return
        const at = yield* storedNow
        yield* events.publish(new ConversationTitleEvent({ conversationId, ownerId, title, at }))
      })

    /**
     * A job of the `conversation-title` queue, queued when a new conversation's first answer ends:
     * writes its title from the answer's model, or from the question when the model gives none. A
     * model that cannot be reached is tried again by the queue; the last attempt's `giveUp` writes
     * the question's.
     */
    const writeTitle = ({ answerId, apiKeyId, conversationId }: typeof TitleJob.Type) =>
      Effect.gen(function*() {
        const found = yield* answers.titleSource(answerId)
        // Gone, titled meanwhile, or with no question to name it after.
        if (Option.isNone(found) || found.value.title !== "" || found.value.question === null) return
        const { modelId, question, userId } = found.value
        const resolved = modelId === null
          ? Option.none()
          : Option.getRight(yield* Effect.either(registry.resolveAny(modelId)))
        if (Option.isNone(resolved)) return yield* setTitle(userId, conversationId, fallbackTitle(question))
        const answer = yield* complete(resolved.value, {
          messages: [{ role: "system", content: titlePrompt }, { role: "user", content: question.slice(0, 2000) }],
          maxTokens: 24,
          temperature: 0.2
        }).pipe(
          Effect.timeoutFail({
            duration: Duration.seconds(60),
            onTimeout: () => new JobFailed({ message: "The model did not answer within 60 s" })
          }),
          Effect.mapError((error) =>
            error._tag === "JobFailed"
              ? error
              : new JobFailed({ message: `The model could not be reached: ${error.message}` })
          )
        )
        // The owner's tokens, and the turn's key's, as the turn's were (a title is not refused: the turn
        // it follows was allowed).
        yield* recordCompletionUsage(
          usageRecords,
          { userId, apiKeyId: apiKeyId ?? null },
          "title",
          resolved.value,
          answer
        )
        const title = cleanTitle(answer.text)
        yield* setTitle(userId, conversationId, title.length > 0 ? title : fallbackTitle(question))
      }).pipe(Effect.withSpan("ChatEngine.writeTitle"), Effect.annotateLogs({ conversationId }))

    /** After the last attempt: the question's own words. */
    const titleFromQuestion = ({ answerId, conversationId }: typeof TitleJob.Type) =>
      Effect.flatMap(answers.titleSource(answerId), (found) =>
        Option.isNone(found) || found.value.question === null
          ? Effect.void
          : setTitle(found.value.userId, conversationId, fallbackTitle(found.value.question)))

    /** Queues the title of a conversation whose first answer has ended (logged if it cannot be). */
    const requestTitle = (conversationId: ConversationId, answerId: MessageId, apiKeyId?: ApiKeyId) =>
      titleJobs.offer({ conversationId, answerId, ...(apiKeyId === undefined ? {} : { apiKeyId }) }, { id: answerId })
        .pipe(
          Effect.asVoid,
          Effect.catchAllCause((cause) => Effect.logWarning("A conversation's title could not be queued", cause))
        )

    /** The question and the empty answer a turn stores in its conversation (or thread). */
    const turnMessages = (input: TurnInput, attached: ReadonlyArray<Attachment>) => ({
      content: input.content,
      metadata: attached.length === 0 ? input.metadata : { ...input.metadata, attachments: attached },
      parentId: input.parentId,
      fileIds: attached.map((file) => file.id)
    })

    /**
     * Once `opening` has stored the question and an empty answer (with the model and preset it
     * chose with the conversation locked), generates the answer in the engine's scope. `titled`: a
     * conversation still without a title gets one from its first question.
     */
    const startTurn = <E, R>(actor: Actor, opening: Effect.Effect<Opened, E, R>, titled: boolean) =>
      Effect.gen(function*() {
        const { answer, branch, conversation, prepared, question } = yield* opening
        const { resolved } = prepared
        const attached = yield* attachments.contents(actor.userId, branch)
        // Long attachments as their passages closest to the question, when they are ready: the room
        // they may take is the history's (nothing is done for a branch without attachments).
        const contents = attached.size === 0 ? attached : yield* passages.narrow(
          { userId: actor.userId, apiKeyId: actor.apiKeyId ?? null },
          branch,
          attached,
          promptBudget(resolved, Option.getOrNull(prepared.preset)) - toolTokens(prepared.tooling)
        )
        const request = buildRequest(prepared, branch, contents)
        const generation: Generation = {
          conversationId: conversation.id,
          answerId: answer.id,
          events: [],
          listeners: [],
          outcome: yield* Deferred.make<Outcome>(),
          parts: [],
          calls: [],
          version: 0,
          flushedVersion: 0,
          lastWrite: yield* Clock.currentTimeMillis,
          cancelRequested: false,
          stop: null,
          ending: false,
          endedAt: null
        }
        record(generation, { _tag: "start", conversationId: conversation.id, question, answer })
        live.set(answer.id, generation)
        // The generation belongs to the engine: it outlives the request, and shutdown ends it.
        generate(
          actor,
          generation,
          answer,
          resolved,
          request,
          titled && conversation.title === "" && question !== null
            ? requestTitle(conversation.id, answer.id, actor.apiKeyId)
            : Effect.void
        )
        // Node sends the provider's request on a later tick (once the agent hands it a socket): the
        // rest of this request (its response, the middleware) waits until it has left.
        yield* afterPendingIo
        const result = Effect.flatMap(
          Deferred.await(generation.outcome),
          ({ answer, failure }) =>
            Option.isSome(failure)
              ? Effect.fail(failure.value)
              : Effect.succeed(new ChatResult({ conversationId: conversation.id, question, answer }, true))
        )
        return {
          conversationId: conversation.id,
          events: { _tag: "Live", events: liveEvents(generation), after: 0 },
          result
        } satisfies Turn
      })

    const chatting = Effect.zipRight(requirePermission("chat"), requirePermission("conversations:write"))

    /** The files a turn attaches, checked (the caller's, with readable text) before anything is stored. */
    const attachedFiles = (actor: Actor, input: TurnInput) =>
      input.fileIds === undefined || input.fileIds.length === 0
        ? Effect.succeed([])
        : Effect.zipRight(requirePermission("files:read"), attachments.check(actor.userId, input.fileIds))

    /**
     * A turn in an existing conversation of the actor's (not in the trash), whose model and preset are
     * chosen once it is locked: it is read once.
     */
    const turn = (conversationId: ConversationId, input: TurnInput) =>
      Effect.gen(function*() {
        const actor = yield* chatting
        yield* requirePermission("conversations:read")
        // Counted once the actor may chat at all (a refused request does not use up the budget).
        yield* rateLimits.modelRequest(actor)
        const attached = yield* attachedFiles(actor, input)
        return yield* startTurn(
          actor,
          conversations.openAnswer(
            conversationId,
            turnMessages(input, attached),
            (conversation) => prepareTurn(actor, input, conversation)
          ),
          true
        )
      })

    const chat = (conversationId: ConversationId, payload: ChatPayload) =>
      turn(conversationId, payload).pipe(Effect.withSpan("ChatEngine.chat"))

    /** A new conversation and its first turn; nothing is stored if the model or preset is refused. */
    const newChat = (payload: NewChatPayload) =>
      Effect.gen(function*() {
        const actor = yield* chatting
        yield* rateLimits.modelRequest(actor)
        const prepared = yield* prepareTurn(actor, payload, null)
        const attached = yield* attachedFiles(actor, payload)
        const conversation = yield* conversations.create({
          title: payload.title,
          modelId: prepared.resolved.model.id,
          modelConfigId: payload.modelConfigId ?? null
        })
        return yield* startTurn(
          actor,
          conversations.openAnswer(conversation.id, turnMessages(payload, attached), () => Effect.succeed(prepared)),
          true
        )
      }).pipe(Effect.withSpan("ChatEngine.newChat"))

    /**
     * A turn in a thread: the question and the answer are the thread's; the model is sent the
     * branch up to the thread's anchor, then the thread.
     */
    const threadChat = (conversationId: ConversationId, threadId: ThreadId, payload: ThreadChatPayload) =>
      Effect.gen(function*() {
        const actor = yield* chatting
        yield* requirePermission("conversations:read")
        yield* rateLimits.modelRequest(actor)
        const attached = yield* attachedFiles(actor, payload)
        const { parentId: _, ...messages } = turnMessages(payload, attached)
        return yield* startTurn(
          actor,
          conversations.openThreadAnswer(
            conversationId,
            threadId,
            { ...messages, content: payload.content },
            (conversation) => prepareTurn(actor, payload, conversation)
          ),
          false
        )
      }).pipe(Effect.withSpan("ChatEngine.threadChat"))

    /** Another answer to the question `messageId` answered, as its sibling. */
    const regenerate = (conversationId: ConversationId, messageId: MessageId, payload: RegeneratePayload) =>
      Effect.gen(function*() {
        const previous = yield* conversations.getMessage(conversationId, messageId)
        if (previous.role !== "assistant" || previous.parentId === null || previous.threadId !== null) {
          return yield* invalid(["messageId"], "Only an answer to a message can be regenerated")
        }
        return yield* turn(conversationId, { ...payload, parentId: previous.parentId })
      }).pipe(Effect.withSpan("ChatEngine.regenerate"))

    const continueChat = (conversationId: ConversationId, payload: ContinuePayload) =>
      turn(conversationId, payload).pipe(Effect.withSpan("ChatEngine.continue"))

    /** Stops an answer being written (here or on another instance); it keeps its text. */
    const cancel = (conversationId: ConversationId, messageId: MessageId) =>
      Effect.gen(function*() {
        yield* chatting
        const message = yield* conversations.getMessage(conversationId, messageId)
        const generation = live.get(messageId)
        if (generation?.stop) {
          generation.cancelRequested = true
          generation.stop()
          yield* ended(generation)
        } else if (generation !== undefined && generation.endedAt === null) {
          // Ending already: its end is being stored.
          yield* ended(generation)
        } else if (message.status === "streaming") {
          yield* answers.cancel(messageId)
        }
        return yield* conversations.getMessage(conversationId, messageId)
      }).pipe(Effect.withSpan("ChatEngine.cancel"))

    /**
     * An answer's events after `after`: live here; if another instance writes it, its events relayed
     * from there (with `REDIS_URL`), else (or once the relay falls silent) snapshots polled from the
     * database.
     */
    const resume = (conversationId: ConversationId, messageId: MessageId, after: number) =>
      Effect.gen(function*(): Effect.fn.Return<Following, NotFound | Forbidden, CurrentActor> {
        const message = yield* conversations.getMessage(conversationId, messageId)
        if (message.role !== "assistant") return yield* new NotFound({ message: "No such answer" })
        const generation = live.get(messageId)
        // An id beyond what was sent (from another answer's stream) counts as "everything so far".
        if (generation) {
          return { _tag: "Live", events: liveEvents(generation), after: Math.min(after, generation.events.length) }
        }
        const relayed = message.status === "streaming" ? yield* relay.follow(messageId, after) : Option.none()
        if (Option.isNone(relayed)) return { _tag: "Streamed", batches: pollStored(conversationId, message, after) }
        const polledFrom = (cursor: number) =>
          Stream.unwrap(
            Effect.map(conversations.readBack(conversationId, messageId), (latest) =>
              pollStored(conversationId, latest, cursor))
          )
        return {
          _tag: "Streamed",
          batches: relayed.value.pipe(Stream.catchTag("RelayQuiet", ({ cursor }) => polledFrom(cursor)))
        }
      }).pipe(Effect.withSpan("ChatEngine.resume"))

    // Other instances' clients follow the answers written here through the relay.
    relay.serve((answerId) => {
      const generation = live.get(answerId)
      return generation === undefined ? null : { ...liveEvents(generation), size: () => generation.events.length }
    })

    // Answers a crashed instance left streaming: at start-up, then as often as the lease runs out.
    const recover = Effect.gen(function*() {
      const before = DateTime.formatIso(DateTime.subtractDuration(yield* DateTime.now, settings.streamLease))
      const recovered = yield* answers.recoverAbandoned(before)
      if (recovered > 0) {
        yield* Effect.logWarning("Answers left streaming by a stopped instance marked incomplete").pipe(
          Effect.annotateLogs({ count: recovered })
        )
      }
    }).pipe(Effect.catchAllCause((cause) => Effect.logWarning("Could not recover answers left streaming", cause)))

    /**
     * Titles whose job a stopped instance never queued: every untitled conversation whose first
     * answer ended within `JOBS_RETENTION` gets its job again. A job already queued or done under
     * the same id is not added twice (with the database's queue), and a job that finds a title
     * does nothing, so queueing again is harmless.
     */
    const recoverTitles = Effect.gen(function*() {
      const since = DateTime.formatIso(DateTime.subtractDuration(yield* DateTime.now, jobSettings.retention))
      const untitled = yield* answers.untitledSince(since, 1_000)
      for (const { answerId, conversationId } of untitled) yield* requestTitle(conversationId, answerId)
    }).pipe(Effect.catchAllCause((cause) => Effect.logWarning("Could not queue the titles left behind", cause)))
    yield* recover
    yield* recover.pipe(Effect.repeat(Schedule.spaced(settings.streamLease)), Effect.forkIn(scope))
    yield* Effect.forkIn(recoverTitles, scope)

    // Every flush interval, one statement writes the text of every answer that grew (or whose lease
    // is a third gone). An answer that is no longer `streaming` was cancelled from another instance
    // (or given up for abandoned): its generation stops, keeping its text.
    const flushDrafts = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const due: Array<Generation> = []
      for (const generation of live.values()) {
        if (generation.ending || generation.stop === null) continue
        if (generation.version !== generation.flushedVersion || now - generation.lastWrite >= heartbeatEvery) {
          due.push(generation)
        }
      }
      if (due.length === 0) return
      const versions = due.map((generation) => generation.version)
      const streaming = yield* answers.flush(due.map((generation) => ({
        id: generation.answerId,
        content: textOf(generation),
        toolCalls: toolCallsOf(generation)
      })))
      for (const [index, generation] of due.entries()) {
        if (streaming.has(generation.answerId)) {
          generation.flushedVersion = versions[index]!
          generation.lastWrite = now
        } else if (!generation.ending && generation.stop !== null) {
          generation.cancelRequested = true
          generation.stop()
        }
      }
    }).pipe(Effect.catchAllCause((cause) => Effect.logWarning("Could not write the answers being generated", cause)))
    yield* flushDrafts.pipe(Effect.repeat(Schedule.spaced(Duration.millis(flushEvery))), Effect.forkIn(scope))

    // Followers of a quiet answer get an empty batch now and then (SSE sends a keep-alive comment).
    yield* Effect.sync(() => {
      for (const generation of live.values()) if (generation.endedAt === null) wake(generation)
    }).pipe(Effect.repeat(Schedule.spaced(keepAlive)), Effect.forkIn(scope))

    const retentionMs = Duration.toMillis(settings.resumeRetention)
    const forgetEnded = Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sync(() => {
        for (const [id, generation] of live) {
          if (generation.endedAt !== null && now - generation.endedAt >= retentionMs) live.delete(id)
        }
      }))
    yield* forgetEnded.pipe(
      Effect.repeat(Schedule.spaced(Duration.millis(Math.max(100, retentionMs / 4)))),
      Effect.forkIn(scope)
    )

    yield* runWorkers(titleJobs, { name: titleQueue, handle: writeTitle, giveUp: titleFromQuestion })

    return { chat, newChat, threadChat, regenerate, continueChat, cancel, resume } as const
  })
}) {}
