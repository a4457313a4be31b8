/**
 * Chat over a plain WebSocket, for browsers and other clients that do not
 * use Effect: `GET /api/v1/chat/ws`, JSON text messages.
 *
 * The client sends:
 * - `{ "type": "auth", "token": "…" }` first, unless the upgrade request carried an
 *   `Authorization: Bearer …` (or `X-API-Key`) header (a browser cannot set one);
 * - `{ "type": "chat", "ref"?: "…", "content": "…", "conversationId"?: "…", "modelId"?: "…",
 *   "modelConfigId"?: "…" }`: a new conversation, or a turn in `conversationId`, answering
 *   `parentId` when given (a question edited, a branch taken up again), or asked in the side
 *   thread `threadId`;
 * - `{ "type": "ack", "messageId": "…", "id": n }`: the events of that answer up to `id` are read;
 * - `{ "type": "cancel", "conversationId": "…", "messageId": "…" }`.
 *
 * The server sends `{ "type": "ready", "userId" }` once authenticated, then
 * `{ "type": "event", "ref", "event" }` with the SSE endpoint's events (`start` … `done`), and
 * `{ "type": "error", "ref"?, "error": { "_tag", "message" } }` for a refused message (the
 * socket stays open) or a failed answer; a `RateLimited` error (`CHAT_RATE_LIMIT_PER_USER`) also
 * says in how many seconds to try again (`retryAfterSeconds`).
 *
 * Signed in for as long as the credential is good: every `chat` and `cancel` checks it again, and
 * so does a timer every `EVENTS_HEARTBEAT_INTERVAL`. A signed-out, disabled or erased user, a
 * revoked key or an expired token gets an `Unauthorized` error (for a message) and the socket is
 * closed with code 1008; so is a socket that has not signed in by the first check. An answer
 * already streaming is still finished and stored, as when any client goes away.
 *
 * Bounded: an answer's events are sent at most `window` ahead of the client's last `ack`; past
 * that its stream waits (the answer itself goes on and is stored), so a client that stops reading
 * holds no more than that many events in the server's buffers. At most `maxOpen` answers stream
 * on one socket at a time.
 */
import { HttpApiBuilder, HttpServerRequest, HttpServerResponse, Socket } from "@effect/platform"
import { Deferred, Effect, Either, FiberId, FiberSet, Redacted, Schedule, Schema, Stream } from "effect"
import { chatSocketMaxOpen as maxOpen, chatSocketPath, chatSocketWindow as window } from "../ApiBeside.js"
import { Auth, credentialIn } from "../Auth.js"
import { ChatEngine, type EventBatch, followingStream } from "../Chat.js"
import { AppConfig } from "../Config.js"
import { type Actor, CurrentActor } from "../Domain/Actor.js"
import { NonNegativeInt } from "../Domain/Fields.js"
import { ConversationId, MessageId, ThreadId } from "../Domain/Ids.js"
import { ChatEvent, NewChatPayload } from "./Api.js"

const Ref = Schema.optional(Schema.String.pipe(Schema.maxLength(200)))

const ClientMessage = Schema.Union(
  Schema.Struct({ type: Schema.Literal("auth"), token: Schema.String.pipe(Schema.maxLength(4096)) }),
  Schema.Struct({
    type: Schema.Literal("chat"),
    ref: Ref,
    conversationId: Schema.optional(ConversationId),
    /** With `conversationId`: the message to answer (as the REST turn's `parentId`). */
    parentId: Schema.optional(MessageId),
    /** With `conversationId`: a question in this side thread of it. */
    threadId: Schema.optional(ThreadId),
    ...NewChatPayload.fields
  }),
  Schema.Struct({ type: Schema.Literal("ack"), messageId: MessageId, id: NonNegativeInt }),
  Schema.Struct({ type: Schema.Literal("cancel"), conversationId: ConversationId, messageId: MessageId })
)
type ClientMessage = typeof ClientMessage.Type

const decodeMessage = Schema.decodeUnknownEither(Schema.parseJson(ClientMessage), { errors: "all" })
const encodeEvent = Schema.encodeSync(ChatEvent)

/** An answer streaming on the socket: how far the client has read it, and a wake-up for when it reads on. */
interface Open {
  acked: number
  moved: Deferred.Deferred<void>
}

export const ChatSocketLive = HttpApiBuilder.Router.use((router) =>
  Effect.gen(function*() {
    const auth = yield* Auth
    const engine = yield* ChatEngine
    const { events: { heartbeat } } = yield* AppConfig

    const serve = Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const fromHeader = credentialIn(request.headers)
      const socket: Socket.Socket = yield* request.upgrade
      const write = yield* socket.writer
      const send = (frame: object) => write(JSON.stringify(frame)).pipe(Effect.ignore)
      /** An `error` frame: its tag and message (and when to retry), with the `ref` of the message it answers. */
      const sendError = (
        error: { readonly _tag: string; readonly message: string; readonly retryAfterSeconds?: number },
        ref?: string
      ) =>
        send({
          type: "error",
          ...(ref === undefined ? {} : { ref }),
          error: {
            _tag: error._tag,
            message: error.message,
            ...(error.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: error.retryAfterSeconds })
          }
        })
      const answers = yield* FiberSet.make()
      const open = new Map<MessageId, Open>()
      let actor: Actor | null = null
      let credential: Redacted.Redacted | null = null

      /** Closes the socket as a policy violation (1008), and fails to end the reading loop. */
      const closeWith = (reason: string) =>
        Effect.zipRight(Effect.ignore(write(new Socket.CloseEvent(1008, reason))), Effect.fail(reason))

      /** The actor the credential stands for now; else the socket is closed (after an error frame for a message). */
      const current = (signedIn: Redacted.Redacted, ref?: string, answering = true) =>
        Effect.catchAll(auth.authenticate(signedIn), () => {
          const reason = "Credentials expired or revoked"
          return Effect.zipRight(
            answering ? sendError({ _tag: "Unauthorized", message: reason }, ref) : Effect.void,
            closeWith(reason)
          )
        })

      const signIn = (token: string) =>
        auth.authenticate(Redacted.make(token)).pipe(
          Effect.tap((who) =>
            Effect.sync(() => {
              actor = who
              credential = Redacted.make(token)
            })
          ),
          Effect.flatMap((who) => send({ type: "ready", userId: who.userId })),
          Effect.catchAll((error) => sendError(error))
        )
      // Sent once the socket runs (its writer waits for it).
      if (fromHeader) yield* FiberSet.run(answers, signIn(fromHeader))

      /** Answers whose events are being sent. */
      let streaming = 0

      /** Sends an answer's events, never more than `window` past the client's acknowledgement. */
      const relay = (ref: string | undefined, events: Stream.Stream<EventBatch>) => {
        let answerId: MessageId | null = null
        let state: Open | undefined
        return Stream.runForEach(Stream.flattenIterables(events), (event) =>
          Effect.gen(function*() {
            if (event._tag === "start") {
              answerId = event.answer.id
              state = { acked: 0, moved: yield* Deferred.make<void>() }
              open.set(event.answer.id, state)
            }
            while (state !== undefined && event.id - state.acked > window) yield* Deferred.await(state.moved)
            yield* send({ type: "event", ...(ref === undefined ? {} : { ref }), event: encodeEvent(event) })
          })).pipe(
            Effect.ensuring(Effect.sync(() => {
              streaming--
              if (answerId !== null) open.delete(answerId)
            }))
          )
      }

      const handle = (message: ClientMessage, who: Actor): Effect.Effect<void> => {
        switch (message.type) {
          case "auth":
            return sendError({ _tag: "ValidationError", message: "Already signed in" })
          case "ack":
            return Effect.suspend(() => {
              const state = open.get(message.messageId)
              if (state === undefined || message.id <= state.acked) return Effect.void
              state.acked = message.id
              const moved = state.moved
              state.moved = Deferred.unsafeMake(FiberId.none)
              return Deferred.succeed(moved, void 0)
            })
          case "cancel":
            return engine.cancel(message.conversationId, message.messageId).pipe(
              Effect.asVoid,
              Effect.catchAll((error) => sendError(error)),
              Effect.provideService(CurrentActor, who)
            )
          case "chat": {
            const { conversationId, parentId, ref, threadId, title, type: _, ...payload } = message
            const misplaced = conversationId === undefined
              ? (parentId ?? threadId) !== undefined ? "parentId and threadId need a conversationId" : null
              : parentId !== undefined && threadId !== undefined
              ? "A question goes either in a thread or after parentId, not both"
              : null
            if (misplaced !== null) return sendError({ _tag: "ValidationError", message: misplaced }, ref)
            if (streaming >= maxOpen) {
              return sendError({ _tag: "RateLimited", message: `At most ${maxOpen} answers stream on one socket` }, ref)
            }
            streaming++
            const turn = conversationId === undefined
              ? engine.newChat({ ...payload, ...(title === undefined ? {} : { title }) })
              : threadId !== undefined
              ? engine.threadChat(conversationId, threadId, payload)
              : engine.chat(conversationId, { ...payload, ...(parentId === undefined ? {} : { parentId }) })
            return turn
              .pipe(
                Effect.provideService(CurrentActor, who),
                Effect.matchEffect({
                  onFailure: (error) => Effect.zipRight(Effect.sync(() => streaming--), sendError(error, ref)),
                  onSuccess: (turn) => Effect.asVoid(FiberSet.run(answers, relay(ref, followingStream(turn.events))))
                })
              )
          }
        }
      }

      // The first check also ends a socket that never signed in.
      const watch = Effect.repeat(
        Effect.suspend(() => credential === null ? closeWith("Not signed in") : current(credential, undefined, false)),
        Schedule.spaced(heartbeat)
      ).pipe(Effect.delay(heartbeat))

      yield* socket.runRaw((data) =>
        Effect.suspend(() => {
          const decoded = decodeMessage(typeof data === "string" ? data : new TextDecoder().decode(data))
          if (Either.isLeft(decoded)) {
            return sendError({ _tag: "ValidationError", message: "Not a message of this socket" })
          }
          const message = decoded.right
          if (actor === null || credential === null) {
            return message.type === "auth"
              ? signIn(message.token)
              : sendError({ _tag: "Unauthorized", message: "Send { type: \"auth\" } first" })
          }
          // Acknowledgements only pace what is already being sent; anything else needs the credential as it is now.
          if (message.type === "ack") return handle(message, actor)
          return Effect.flatMap(
            current(credential, message.type === "chat" ? message.ref : undefined),
            (who) => handle(message, who)
          )
        })
      ).pipe(Effect.raceFirst(watch), Effect.catchAll(() => Effect.void))
      return HttpServerResponse.empty()
    }).pipe(Effect.scoped)

    yield* router.get(chatSocketPath, Effect.catchAll(serve, () => HttpServerResponse.empty({ status: 400 })))
  })
)
