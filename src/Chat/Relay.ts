/**
 * Answers followed across instances. With `REDIS_URL`, a client that resumes
 * an answer on an instance other than the one writing it gets the writer's own
 * events (its deltas, under its event ids) through Redis, instead of snapshots
 * of the stored text polled from the database.
 *
 * On one channel (`<REDIS_KEY_PREFIX>answers`): the follower, already
 * listening, asks for an answer's events after the last one its client has
 * (`follow`); the instance writing it answers with those, then passes on each
 * new batch of that answer until its `done`, and an empty batch whenever the
 * answer is quiet for a keep-alive period. Only answers followed from
 * elsewhere are passed on. A follower that hears nothing within `firstWait`
 * (no instance writes the answer) or for longer than `quietLimit` (its writer
 * went away) says so, and the engine polls the database instead.
 */
import { Data, Duration, Effect, Option, Queue, Schema, Stream } from "effect"
import * as Crypto from "node:crypto"
import { AppConfig } from "../Config.js"
import type { MessageId } from "../Domain/Ids.js"
import { instanceChannel } from "../Redis.js"
import { ChatEvent } from "./Api.js"

/** Events that arrived together; empty: nothing new (a keep-alive). */
type Batch = ReadonlyArray<ChatEvent>

/**
 * `follow`: a follower's request, `ref` naming it. `events`: a batch of an answer; the reply to a
 * request carries its `ref` and where its events start (`from`: the follower's cursor, or the
 * answer's length when that was beyond it).
 */
const Message = Schema.parseJson(Schema.Union(
  Schema.Struct({
    kind: Schema.Literal("follow"),
    answerId: Schema.String,
    after: Schema.Int,
    ref: Schema.String,
    origin: Schema.String
  }),
  Schema.Struct({
    kind: Schema.Literal("events"),
    answerId: Schema.String,
    events: Schema.Array(ChatEvent),
    over: Schema.Boolean,
    reply: Schema.optional(Schema.Struct({ ref: Schema.String, from: Schema.Int })),
    origin: Schema.String
  })
))
type EventsMessage = Extract<typeof Message.Type, { readonly kind: "events" }>

/** How long a follower waits for the writer's first answer. */
const firstWait = Duration.seconds(1)

/** How long a followed answer may stay silent (keep-alives included) before its writer counts as gone. */
export const quietLimit = Duration.seconds(40)

/** The relayed events stopped coming: the writer went away. */
export class RelayQuiet extends Data.TaggedError("RelayQuiet")<{ readonly cursor: number }> {}

/** What the writing instance gives for a follow request: the answer's events, until it is over. */
export interface Served {
  /** How many events the answer has so far. */
  readonly size: () => number
  /** The events after `cursor` (an event's id is its position, from 1), and whether nothing more will come. */
  readonly after: (cursor: number) => { readonly batch: Batch; readonly over: boolean }
  /** Calls `listener` once, at the next change (new events, the end, a keep-alive). */
  readonly onChange: (listener: () => void) => void
}

interface Relay {
  /** Whether answers can be followed across instances (`REDIS_URL` is set). */
  readonly enabled: boolean
  /** Sets how the engine finds the answers it writes, for follow requests from other instances. */
  readonly serve: (find: (answerId: MessageId) => Served | null) => void
  readonly follow: (
    answerId: MessageId,
    after: number
  ) => Effect.Effect<Option.Option<Stream.Stream<Batch, RelayQuiet>>>
}

const disabled: Relay = {
  enabled: false,
  serve: () => {},
  follow: () => Effect.succeed(Option.none())
}

export class AnswerRelay extends Effect.Service<AnswerRelay>()("Chat/AnswerRelay", {
  scoped: Effect.gen(function*() {
    const { redis } = yield* AppConfig
    if (Option.isNone(redis.url)) return disabled
    const { listen, origin, publish } = yield* instanceChannel({
      url: redis.url.value,
      channel: `${redis.keyPrefix}answers`,
      schema: Message,
      whileDown: {
        publishing: "answers written here cannot be followed from other instances",
        listening: "answers written elsewhere are followed from the database"
      }
    })

    /** The answers this instance follows for its clients, by id: where their events go. */
    const followers = new Map<string, Set<(message: EventsMessage) => void>>()
    /** How to find an answer this instance writes (set by the engine). */
    let find: (answerId: MessageId) => Served | null = () => null
    /** The answers this instance passes on, so that a second follow request adds no second forwarder. */
    const forwarding = new Set<string>()

    const forward = (answerId: string, served: Served, from: number) => {
      let cursor = from
      const next = () =>
        served.onChange(() => {
          const { batch, over } = served.after(cursor)
          cursor += batch.length
          publish({ kind: "events", answerId, events: batch, over, origin })
          if (over) forwarding.delete(answerId)
          else next()
        })
      forwarding.add(answerId)
      next()
    }

    yield* listen((message) => {
      if (message.kind === "events") {
        for (const deliver of followers.get(message.answerId) ?? []) deliver(message)
        // Nothing more comes for it: a follower whose stream never ran leaves nothing behind.
        if (message.over) followers.delete(message.answerId)
        return
      }
      const served = find(message.answerId as MessageId)
      if (served === null) return
      // The events this follower lacks (an id beyond the answer's counts as everything so far);
      // then, once per answer, every new batch.
      const from = Math.min(message.after, served.size())
      const { batch, over } = served.after(from)
      publish({
        kind: "events",
        answerId: message.answerId,
        events: batch,
        over,
        reply: { ref: message.ref, from },
        origin
      })
      if (!over && !forwarding.has(message.answerId)) forward(message.answerId, served, from + batch.length)
    })

    /**
     * The events of `answerId` after `after`, as its writer sends them, ending with its `done`
     * (only events that follow on from what the follower has: ids in order, none twice); `None`
     * when no instance answers within `firstWait`. Fails with `RelayQuiet` (and where it got to)
     * when the writer falls silent.
     */
    const follow = (
      answerId: MessageId,
      after: number
    ): Effect.Effect<Option.Option<Stream.Stream<Batch, RelayQuiet>>> =>
      Effect.gen(function*() {
        const queue = yield* Queue.unbounded<EventsMessage>()
        const deliver = (message: EventsMessage) => void queue.unsafeOffer(message)
        const listeners = followers.get(answerId) ?? new Set()
        listeners.add(deliver)
        followers.set(answerId, listeners)
        const leave = Effect.sync(() => {
          listeners.delete(deliver)
          if (listeners.size === 0) followers.delete(answerId)
        })
        const ref = Crypto.randomUUID()
        publish({ kind: "follow", answerId, after, ref, origin })
        // The writer's reply to this request; what comes before it (for other followers) it repeats.
        const reply: Effect.Effect<EventsMessage> = Effect.flatMap(
          Queue.take(queue),
          (message) => message.reply?.ref === ref ? Effect.succeed(message) : reply
        )
        const first = yield* reply.pipe(Effect.timeout(firstWait), Effect.option, Effect.onInterrupt(() => leave))
        if (Option.isNone(first)) {
          yield* leave
          return Option.none<Stream.Stream<Batch, RelayQuiet>>()
        }
        let cursor = first.value.reply!.from
        /**
         * Of what came, what follows on from the cursor (a batch the writer sent another follower may
         * repeat or skip ahead), and whether it is the end: its `done`, or the writer saying it is over
         * with nothing more (its end could not be stored).
         */
        const take = ({ events: batch, over }: EventsMessage) => {
          const fresh: Array<ChatEvent> = []
          for (const event of batch) {
            if (event.id !== cursor + 1) continue
            fresh.push(event)
            cursor = event.id
          }
          return { fresh, end: fresh.at(-1)?._tag === "done" || (over && batch.length === 0) }
        }
        const rest = Stream.fromQueue(queue).pipe(
          Stream.timeoutFail(() => new RelayQuiet({ cursor }), quietLimit)
        )
        return Option.some(
          Stream.concat(Stream.succeed(first.value), rest).pipe(
            Stream.map(take),
            Stream.takeUntil(({ end }) => end),
            Stream.map(({ fresh }): Batch => fresh),
            Stream.ensuring(leave)
          )
        )
      })

    return {
      enabled: true,
      serve: (findServed) => {
        find = findServed
      },
      follow
    } satisfies Relay as Relay
  })
}) {}
