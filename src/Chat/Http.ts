import { HttpApiBuilder, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Schema, Stream } from "effect"
import { Readable } from "node:stream"
import { WebPlusApi } from "../Api.js"
import { ChatEngine, type EventBatch, type Following, followingStream, type LiveEvents, type Turn } from "../Chat.js"
import { CurrentActor } from "../Domain/Actor.js"
import { Forbidden } from "../Domain/Errors.js"
import type { ProviderFailure } from "../Models/Errors.js"
import { ChatEvent, type ChatResult, SimpleChatResponse } from "./Api.js"

const encodeEvent = Schema.encodeSync(ChatEvent)

/** One event in the SSE wire format; deltas (most events) skip the schema, having nothing to encode. */
export const sseEvent = (event: ChatEvent): string =>
  `id: ${event.id}\nevent: ${event._tag}\ndata: ${
    JSON.stringify(event._tag === "delta" ? event : encodeEvent(event))
  }\n\n`

/**
 * The events of a batch as one write; an empty batch is a comment line, which keeps proxies from
 * closing a quiet stream.
 */
const sseBatch = (batch: EventBatch): string => batch.length === 0 ? ": keep-alive\n\n" : batch.map(sseEvent).join("")

const encoder = new TextEncoder()

/**
 * A live answer's events as a Node stream, written as the generation records them: the request
 * waits on the response's pipe, with no fiber or `Stream` run per open stream. A client that
 * reads slowly is not sent more until it has taken what it was sent (its events wait in memory).
 */
const liveBody = (events: LiveEvents, after: number): Readable => {
  let cursor = after
  /** Set while waiting for the next change. */
  let cancel: (() => void) | null = null
  const body: Readable = new Readable({
    read: () => {
      if (cancel === null) send(false)
    },
    destroy: (error, callback) => {
      cancel?.()
      cancel = null
      callback(error)
    }
  })
  /** Sends what is new (after a wake-up, a keep-alive if nothing is), or waits for it. */
  const send = (woken: boolean) => {
    const { batch, over } = events.after(cursor)
    cursor += batch.length
    const more = batch.length > 0 || woken ? body.push(sseBatch(batch)) : true
    if (over) body.push(null)
    else if (batch.length === 0 || (woken && more)) {
      // Nothing to send now, or sent on a wake-up while the client keeps up: wait for the next change.
      cancel = events.onChange(() => {
        cancel = null
        send(true)
      })
    }
  }
  return body
}

const sseHeaders = {
  contentType: "text/event-stream",
  headers: { "cache-control": "no-cache, no-transform", "x-accel-buffering": "no" }
} as const

/** An answer's events as server-sent events, keep-alives as comments. */
export const sseResponse = (following: Following) =>
  following._tag === "Live"
    ? HttpServerResponse.raw(liveBody(following.events, following.after), sseHeaders)
    : HttpServerResponse.stream(
      Stream.map(followingStream(following), (batch) => encoder.encode(sseBatch(batch))),
      sseHeaders
    )

/** Events when the client reads them, else the finished answer as JSON. */
const respond = (
  turn: Turn
): Effect.Effect<
  ChatResult | HttpServerResponse.HttpServerResponse,
  ProviderFailure,
  HttpServerRequest.HttpServerRequest
> =>
  Effect.flatMap(
    HttpServerRequest.HttpServerRequest,
    (request): Effect.Effect<ChatResult | HttpServerResponse.HttpServerResponse, ProviderFailure> =>
      (request.headers.accept ?? "").includes("text/event-stream")
        ? Effect.succeed(sseResponse(turn.events))
        : turn.result
  )

export const ChatHttpLive = HttpApiBuilder.group(WebPlusApi, "chat", (handlers) =>
  Effect.gen(function*() {
    const engine = yield* ChatEngine
    return handlers
      .handle("chat", ({ path, payload }) => Effect.flatMap(engine.chat(path.id, payload), respond))
      .handle("newChat", ({ payload }) => Effect.flatMap(engine.newChat(payload), respond))
      .handle(
        "threadChat",
        ({ path, payload }) => Effect.flatMap(engine.threadChat(path.id, path.threadId, payload), respond)
      )
      .handle(
        "regenerate",
        ({ path, payload }) => Effect.flatMap(engine.regenerate(path.id, path.messageId, payload), respond)
      )
      .handle("continueChat", ({ path, payload }) => Effect.flatMap(engine.continueChat(path.id, payload), respond))
      .handle("cancelAnswer", ({ path }) => engine.cancel(path.id, path.messageId))
      .handle("resumeAnswer", ({ headers, path }) =>
        Effect.map(engine.resume(path.id, path.messageId, headers["last-event-id"] ?? 0), sseResponse))
      .handle("simpleChat", ({ path, payload }) =>
        Effect.gen(function*() {
          const actor = yield* CurrentActor
          if (path.userId !== actor.userId) {
            return yield* new Forbidden({ message: "You can only chat as yourself" })
          }
          const content = { content: payload.message }
          const turn = yield* (payload.conversation_id === undefined
            ? engine.newChat(content)
            : engine.chat(payload.conversation_id, content))
          const { answer } = yield* turn.result
          return new SimpleChatResponse({
            conversation_id: turn.conversationId,
            response: answer.content,
            tool_calls: answer.toolCalls
          })
        }))
  }))
