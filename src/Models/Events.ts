/**
 * The events the server pushes: every status change of a model, and a new
 * conversation's generated title (to its owner), are published here, and
 * `/api/v1/events` (a WebSocket) pushes them to connected clients, which get
 * the current state of every model they may see first. With `REDIS_URL`, the
 * instances pass their events on to each other through a Redis channel
 * (`<REDIS_KEY_PREFIX>events`), so a client hears every change whichever
 * instance it is connected to.
 *
 * Each socket is bounded: a client that does not read (its unsent data
 * passes `EVENTS_SOCKET_BUFFER_SIZE`) is disconnected at once, and a
 * closed or broken socket is dropped at once, so one client never slows
 * the others. A user holds at most `EVENTS_MAX_SOCKETS_PER_USER` sockets; one
 * more is answered 429 before the upgrade.
 *
 * Credentials, since browsers cannot set headers on a WebSocket: the
 * `Authorization` header, else `?access_token=…`, else the subprotocols
 * `webplus.bearer, <token>` (the server answers with `webplus.bearer`).
 */
import { HttpApiBuilder, HttpServerRequest, HttpServerResponse, Socket } from "@effect/platform"
import { NodeHttpServerRequest } from "@effect/platform-node"
import { Effect, Fiber, HashMap, Option, PubSub, Queue, Redacted, Ref, Schedule, Schema } from "effect"
import { eventsPath } from "../ApiBeside.js"
import { Auth, credentialIn } from "../Auth.js"
import { AppConfig } from "../Config.js"
import type { Actor } from "../Domain/Actor.js"
import { Forbidden, RateLimited, Unauthorized } from "../Domain/Errors.js"
import { ConversationId, FileAnalysisId, FileId, LlmModelId, ProviderId, UserId } from "../Domain/Ids.js"
import { ModelStatus } from "../Domain/Model.js"
import { instanceChannel } from "../Redis.js"

export class ModelStatusEvent extends Schema.TaggedClass<ModelStatusEvent>()("model.status", {
  modelId: LlmModelId,
  providerId: ProviderId,
  providerModel: Schema.String,
  status: ModelStatus,
  statusMessage: Schema.NullOr(Schema.String),
  enabled: Schema.Boolean,
  /** Whether users (not only admins) may pick the model: enabled, on an enabled provider. */
  usable: Schema.Boolean,
  at: Schema.String
}) {}

export class ModelRemovedEvent extends Schema.TaggedClass<ModelRemovedEvent>()("model.removed", {
  modelId: LlmModelId,
  providerId: ProviderId,
  at: Schema.String
}) {}

export class ModelPullEvent extends Schema.TaggedClass<ModelPullEvent>()("model.pull", {
  modelId: LlmModelId,
  providerId: ProviderId,
  providerModel: Schema.String,
  status: Schema.String,
  total: Schema.NullOr(Schema.Number),
  completed: Schema.NullOr(Schema.Number),
  at: Schema.String
}) {}

/** A new conversation's generated title, written in the background once its first answer is done. */
export class ConversationTitleEvent extends Schema.TaggedClass<ConversationTitleEvent>()("conversation.title", {
  conversationId: ConversationId,
  /** Whose it is: only their sockets hear it (not sent). */
  ownerId: UserId,
  title: Schema.String,
  at: Schema.String
}) {}

/** A file's analysis ended (`complete` or `error`): read it with `GET /api/v1/files/{fileId}/analyses/{analysisId}`. */
export class FileAnalysisEvent extends Schema.TaggedClass<FileAnalysisEvent>()("file.analysis", {
  analysisId: FileAnalysisId,
  fileId: FileId,
  ownerId: UserId,
  status: Schema.Literal("complete", "error"),
  at: Schema.String
}) {}

/** A knowledge-graph extraction ended (`complete` or `error`), with what it found. */
export class GraphExtractionEvent extends Schema.TaggedClass<GraphExtractionEvent>()("graph.extraction", {
  extractionId: Schema.String,
  ownerId: UserId,
  status: Schema.Literal("complete", "error"),
  entityCount: Schema.Number,
  relationshipCount: Schema.Number,
  at: Schema.String
}) {}

export const ServerEvent = Schema.Union(
  ModelStatusEvent,
  ModelRemovedEvent,
  ModelPullEvent,
  ConversationTitleEvent,
  FileAnalysisEvent,
  GraphExtractionEvent
)
export type ServerEvent = typeof ServerEvent.Type

/** The wire form: `{ "type": "model.status", … }`, and first `{ "type": "snapshot", "models": [ModelStatusEvent…] }`. */
const encodeEvent = (event: ServerEvent | { readonly snapshot: ReadonlyArray<ModelStatusEvent> }): string => {
  if ("snapshot" in event) {
    return JSON.stringify({ type: "snapshot", models: event.snapshot.map(({ _tag, ...rest }) => rest) })
  }
  // Whose an event is decides who hears it; it is not sent.
  const { _tag, ownerId: _ownerId, ...rest } = event as ServerEvent & { readonly ownerId?: string }
  return JSON.stringify({ type: _tag, ...rest })
}

/**
 * Which events a socket forwards. A conversation's title and a graph extraction's end go to their
 * owner alone, if they may read conversations (`conversations:read`); a file analysis' end to its
 * owner, if they may read files (`files:read`). Model events need `models:read`: admins (`admin:models`)
 * see everything; a user sees the models they may pick, and hears once when one of those stops
 * being theirs to pick (disabled, removed), so a client never keeps a stale entry; nothing else.
 * A credential limited to some models (an API key's list, a role's) hears only of those.
 */
const visibleTo = (actor: Actor, initial: ReadonlyArray<ModelStatusEvent>) => {
  const admin = actor.can("admin:models")
  const models = actor.can("models:read")
  const conversations = actor.can("conversations:read")
  const files = actor.can("files:read")
  const known = new Set(initial.map((event) => event.modelId))
  return (event: ServerEvent): boolean => {
    switch (event._tag) {
      case "conversation.title":
      case "graph.extraction":
        return conversations && event.ownerId === actor.userId
      case "file.analysis":
        return files && event.ownerId === actor.userId
    }
    // A credential limited to some models (its key's, its role's) hears of those only.
    if (!models || !actor.mayUse(event.modelId)) return false
    if (admin) return true
    switch (event._tag) {
      case "model.status":
        if (event.usable) {
          known.add(event.modelId)
          return true
        }
        return known.delete(event.modelId)
      case "model.removed":
        return known.delete(event.modelId)
      case "model.pull":
        return false
    }
  }
}

/** What instances tell each other about an event: which instance had it, and the event. */
const Broadcast = Schema.parseJson(Schema.Struct({ origin: Schema.String, event: ServerEvent }))

/**
 * Where events go besides this instance's sockets: with `REDIS_URL`, a Redis channel every
 * instance publishes to and listens on, so a socket on any instance hears what happened through
 * another. `deliver` takes the events other instances published.
 */
const fanOut = (deliver: (event: ServerEvent) => void) =>
  Effect.gen(function*() {
    const { redis } = yield* AppConfig
    if (Option.isNone(redis.url)) return (_event: ServerEvent) => Effect.void
    const { listen, origin, publish } = yield* instanceChannel({
      url: redis.url.value,
      channel: `${redis.keyPrefix}events`,
      schema: Broadcast,
      whileDown: {
        publishing: "events are not passed on to other instances",
        listening: "events from other instances are not heard"
      }
    })
    yield* listen(({ event }) => deliver(event))
    return (event: ServerEvent) => Effect.sync(() => publish({ origin, event }))
  })

/** The events the server pushes to `/api/v1/events`: published here, heard on every instance. */
export class EventHub extends Effect.Service<EventHub>()("Models/EventHub", {
  scoped: Effect.gen(function*() {
    // Unbounded hub: publishing never waits on a subscriber; each socket bounds itself instead.
    const hub = yield* Effect.acquireRelease(PubSub.unbounded<ServerEvent>(), PubSub.shutdown)
    const broadcast = yield* fanOut((event) => void hub.unsafeOffer(event))
    const sockets = yield* Ref.make(HashMap.empty<UserId, number>())
    return {
      /** To this instance's sockets at once, then to the other instances' (a Redis that is down loses it there). */
      publish: (event: ServerEvent) => Effect.zipRight(PubSub.publish(hub, event), broadcast(event)),
      subscribe: PubSub.subscribe(hub),
      /** Holds one of `limit` socket slots of the user for the scope; false when none is left. */
      acquireSlot: (userId: UserId, limit: number) =>
        Effect.acquireRelease(
          Ref.modify(sockets, (counts) => {
            const held = Option.getOrElse(HashMap.get(counts, userId), () => 0)
            return held >= limit ? [false, counts] : [true, HashMap.set(counts, userId, held + 1)]
          }),
          (acquired) =>
            acquired
              ? Ref.update(sockets, (counts) => {
                const held = Option.getOrElse(HashMap.get(counts, userId), () => 1) - 1
                return held <= 0 ? HashMap.remove(counts, userId) : HashMap.set(counts, userId, held)
              })
              : Effect.void
        )
    } as const
  })
}) {}

/** The API's one error body, for refusals before the upgrade. */
const errorResponse = (error: Unauthorized | Forbidden | RateLimited, status: number) =>
  HttpServerResponse.unsafeJson(
    {
      _tag: error._tag,
      message: error.message,
      ...(error._tag === "RateLimited" ? { retryAfterSeconds: error.retryAfterSeconds } : {})
    },
    {
      status,
      headers: error._tag === "RateLimited" ? { "retry-after": String(error.retryAfterSeconds) } : {}
    }
  )

/**
 * Events waiting for one socket's turn; beyond this the socket cannot keep up and is dropped. A
 * client that stops reading is cut by its unsent bytes (`EVENTS_SOCKET_BUFFER_SIZE`) long before:
 * this only bounds a socket whose sending cannot run. It must stay well above a burst the server
 * itself publishes at once (a model download reporting tens of thousands of phases), which a
 * client reading at full speed still takes a moment to catch up on. A waiting event costs a socket
 * only its place in the queue: the event is shared by every socket.
 */
const maxPendingEvents = 100_000

const credentialOf = (request: HttpServerRequest.HttpServerRequest): string | undefined => {
  const fromHeaders = credentialIn(request.headers)
  if (fromHeaders) return fromHeaders
  const query = new URL(request.url, "http://localhost").searchParams.get("access_token")
  if (query) return query
  const protocols = (request.headers["sec-websocket-protocol"] ?? "").split(",").map((item) => item.trim())
  const index = protocols.indexOf("webplus.bearer")
  return index >= 0 ? protocols[index + 1] : undefined
}

/**
 * The events route, beside the HTTP API. `snapshot` is the current state the
 * actor may see, sent before anything else.
 */
export const eventsRoute = (snapshot: (actor: Actor) => Effect.Effect<ReadonlyArray<ModelStatusEvent>>) =>
  HttpApiBuilder.Router.use((router) =>
    Effect.gen(function*() {
      const auth = yield* Auth
      const events = yield* EventHub
      const { events: settings } = yield* AppConfig
      yield* router.get(
        eventsPath,
        Effect.gen(function*() {
          const request = yield* HttpServerRequest.HttpServerRequest
          if ((request.headers.upgrade ?? "").toLowerCase() !== "websocket") {
            return HttpServerResponse.unsafeJson(
              { _tag: "UpgradeRequired", message: "This endpoint speaks WebSocket only" },
              { status: 426, headers: { upgrade: "websocket", connection: "Upgrade" } }
            )
          }
          const credential = credentialOf(request)
          if (credential === undefined) {
            return errorResponse(new Unauthorized({ message: "Missing credentials" }), 401)
          }
          const authenticated = yield* Effect.either(auth.authenticate(Redacted.make(credential)))
          if (authenticated._tag === "Left") return errorResponse(authenticated.left, 401)
          const actor = authenticated.right
          // Either is enough: a chat client's key may hear its conversations' titles without seeing models.
          if (!actor.can("models:read") && !actor.can("conversations:read") && !actor.can("files:read")) {
            return errorResponse(
              new Forbidden({
                message: "This requires the \"models:read\", \"conversations:read\" or \"files:read\" permission"
              }),
              403
            )
          }
          if (!(yield* events.acquireSlot(actor.userId, settings.maxSocketsPerUser))) {
            return errorResponse(
              new RateLimited({ message: "Too many event sockets open for this user", retryAfterSeconds: 5 }),
              429
            )
          }
          // Subscribed before the snapshot is read, so no change falls between the two.
          const subscription = yield* events.subscribe
          const initial = actor.can("models:read") ? yield* snapshot(actor) : []
          const raw = NodeHttpServerRequest.toIncomingMessage(request).socket
          const socket = yield* request.upgrade
          const write = yield* socket.writer
          const visible = visibleTo(actor, initial)
          const tooSlow = () => raw.writableLength > settings.socketBufferBytes
          // A client that does not read would never take a closing handshake either: cut it.
          const send = (text: string): Effect.Effect<void, "slow" | Socket.SocketError> =>
            tooSlow()
              ? Effect.zipRight(
                Effect.sync(() => raw.destroy()),
                Effect.fail("slow" as const)
              )
              : write(text)
          const pump = Effect.gen(function*() {
            yield* send(encodeEvent({ snapshot: initial }))
            while (true) {
              if ((yield* Queue.size(subscription)) > maxPendingEvents) {
                return yield* Effect.zipRight(Effect.sync(() => raw.destroy()), Effect.fail("slow" as const))
              }
              const batch = yield* Queue.takeBetween(subscription, 1, 64)
              for (const event of batch) if (visible(event)) yield* send(encodeEvent(event))
            }
          })
          // Each heartbeat also checks the credential again: a signed-out, disabled or erased user,
          // a revoked key or an expired token ends the socket (the client reconnects with a fresh one).
          const stillValid = Effect.flatMap(
            Effect.either(auth.authenticate(Redacted.make(credential))),
            (result) =>
              result._tag === "Right"
                ? Effect.void
                : Effect.zipRight(
                  Effect.ignore(write(new Socket.CloseEvent(1008, "Credentials expired or revoked"))),
                  Effect.fail("unauthorized" as const)
                )
          )
          const heartbeat = Effect.repeat(
            Effect.zipRight(stillValid, Effect.suspend(() => send(JSON.stringify({ type: "ping" })))),
            Schedule.spaced(settings.heartbeat)
          ).pipe(Effect.delay(settings.heartbeat))
          const pumping = yield* Effect.fork(Effect.raceFirst(pump, heartbeat))
          // Incoming messages are ignored; this ends when the client goes away.
          yield* socket.runRaw(() => Effect.void).pipe(
            Effect.raceFirst(Fiber.join(pumping)),
            Effect.ignore
          )
          yield* Fiber.interrupt(pumping)
          return HttpServerResponse.empty()
        }).pipe(Effect.scoped)
      )
    })
  )
