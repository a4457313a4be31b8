/**
 * Chat over a plain WebSocket (`GET /api/v1/chat/ws`), as a browser speaks it:
 * JSON messages, signing in by message or by the upgrade's header, answers
 * streamed as events, cancel by message, refused messages answered with typed
 * errors, and the acknowledgement window that keeps a client that stops
 * reading from filling the server's buffers. Both dialects, the development
 * model as the provider.
 */
import { describe, expect, layer } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import WebSocket from "ws"
import { chatSocketPath, chatSocketWindow as window } from "../src/ApiBeside.js"
import { call, signIn, signUp, type TestUser } from "./fixtures/Auth.js"
import { dialects } from "./fixtures/Database.js"
import { TestServer, testServer } from "./fixtures/Server.js"

interface Cast {
  readonly admin: TestUser
  readonly user: TestUser
  readonly other: TestUser
}

class TheCast extends Context.Tag("test/ChatSocket/Cast")<TheCast, Cast>() {}

const withCast = (dialect: (typeof dialects)[number]) =>
  Layer.effect(
    TheCast,
    Effect.gen(function*() {
      const admin = yield* signUp()
      const [user, other] = yield* Effect.all([signUp(), signUp()])
      return { admin, user, other }
    })
  ).pipe(
    Layer.provideMerge(
      testServer({ dialect, env: { DEVELOPMENT_MODEL: "true", EVENTS_HEARTBEAT_INTERVAL: heartbeat } })
    )
  )

/** How often the server checks a socket's credential again (short, for the tests that wait for it). */
const heartbeat = "1 second"

type Frame = Record<string, any>

/** A WebSocket to the chat path whose frames are queued for `next`. */
const connect = (headers: Record<string, string> = {}) =>
  Effect.acquireRelease(
    Effect.flatMap(TestServer, ({ baseUrl }) =>
      Effect.async<{
        readonly ws: WebSocket
        readonly frames: Array<Frame>
        waiters: Array<() => void>
        closed: { readonly code: number; readonly reason: string } | null
      }>(
        (resume) => {
          const ws = new WebSocket(`${baseUrl.replace(/^http/, "ws")}${chatSocketPath}`, { headers })
          const socket = {
            ws,
            frames: [] as Array<Frame>,
            waiters: [] as Array<() => void>,
            closed: null as { readonly code: number; readonly reason: string } | null
          }
          const wakeAll = () => {
            for (const wake of socket.waiters.splice(0)) {
              wake()
            }
          }
          ws.on("message", (data) => {
            socket.frames.push(JSON.parse(String(data)))
            wakeAll()
          })
          ws.on("close", (code, reason) => {
            socket.closed = { code, reason: String(reason) }
            wakeAll()
          })
          ws.on("open", () => resume(Effect.succeed(socket)))
          ws.on("error", (error) => resume(Effect.die(error)))
        }
      )),
    ({ ws }) => Effect.sync(() => ws.close())
  )

type Socket = Effect.Effect.Success<ReturnType<typeof connect>>

const send = (socket: Socket, message: object) => Effect.sync(() => socket.ws.send(JSON.stringify(message)))

/** The next frame (waiting up to `timeoutMs` for it). */
const next = (socket: Socket, timeoutMs = 5_000): Effect.Effect<Frame> =>
  Effect.suspend(() => {
    const frame = socket.frames.shift()
    if (frame !== undefined) return Effect.succeed(frame)
    return Effect.async<void>((resume) => {
      socket.waiters.push(() => resume(Effect.void))
    }).pipe(
      Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new Error("no frame") }),
      Effect.orDie,
      Effect.flatMap(() => next(socket, timeoutMs))
    )
  })

/**
 * Frames up to and including the `done` event, acknowledging each event as it comes (`answerId`:
 * the answer's, when its `start` was read before).
 */
const untilDone = (socket: Socket, answerId?: string) =>
  Effect.gen(function*() {
    const frames: Array<Frame> = []
    let answer = answerId
    while (true) {
      const frame = yield* next(socket)
      frames.push(frame)
      if (frame.type !== "event") continue
      if (frame.event._tag === "start") answer = frame.event.answer.id
      if (answer !== undefined) yield* send(socket, { type: "ack", messageId: answer, id: frame.event.id })
      if (frame.event._tag === "done") return frames
    }
  })

const sleep = (millis: number) => Effect.sleep(`${millis} millis`)

/** How the server closed the socket (waiting up to `timeoutMs` for it). */
const closing = (socket: Socket, timeoutMs = 5_000) =>
  Effect.suspend(() =>
    socket.closed !== null ? Effect.succeed(socket.closed) : Effect.async<void>((resume) => {
      socket.waiters.push(() => resume(Effect.void))
    }).pipe(Effect.zipRight(Effect.suspend(() =>
      socket.closed === null ? Effect.fail("open" as const) : Effect.succeed(socket.closed)
    )))
  ).pipe(
    Effect.retry({ while: (open) => open === "open" }),
    Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new Error("still open") }),
    Effect.orDie
  )

for (const dialect of dialects) {
  layer(withCast(dialect), { excludeTestServices: true })(`chat over a WebSocket on ${dialect}`, (it) => {
    describe("signing in", () => {
      it.scoped("by message: nothing is answered before it; then the answer streams to done", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const socket = yield* connect()
          yield* send(socket, { type: "chat", content: "too early" })
          expect((yield* next(socket)).error._tag).toBe("Unauthorized")
          yield* send(socket, { type: "auth", token: "wrong" })
          expect((yield* next(socket)).error._tag).toBe("Unauthorized")
          yield* send(socket, { type: "auth", token: user.accessToken })
          expect(yield* next(socket)).toEqual({ type: "ready", userId: user.id })

          yield* send(socket, { type: "chat", ref: "first", content: "hello over a socket" })
          const frames = yield* untilDone(socket)
          expect(frames.every((frame) => frame.type === "event" && frame.ref === "first")).toBe(true)
          const events = frames.map((frame) => frame.event)
          expect(events[0]._tag).toBe("start")
          expect(events.map((event) => event.id)).toEqual(events.map((_, index) => index + 1))
          const text = events.filter((event) => event._tag === "delta").map((event) => event.text).join("")
          expect(text).toContain("hello over a socket")
          expect(events.at(-1).message).toMatchObject({ status: "complete", content: text })

          // The answer is stored, in the user's conversation.
          const stored = yield* call("GET", `/api/v1/conversations/${events[0]!.conversationId}/messages`, {
            auth: user.accessToken
          })
          expect(stored.body.items.map((message: any) => message.content)).toEqual(["hello over a socket", text])
        }))

      it.scoped("by the upgrade's Authorization header, then chatting in an existing conversation", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const socket = yield* connect({ authorization: `Bearer ${user.accessToken}` })
          expect(yield* next(socket)).toEqual({ type: "ready", userId: user.id })
          const created = yield* call("POST", "/api/v1/conversations", { auth: user.accessToken, body: {} })
          yield* send(socket, { type: "chat", conversationId: created.body.id, content: "in this one" })
          const frames = yield* untilDone(socket)
          expect(frames[0]!.event.conversationId).toBe(created.body.id)
        }))
    })

    describe("threads and branches", () => {
      it.scoped("a question in a side thread, and one answering an earlier message (a new branch)", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const auth = { auth: user.accessToken }
          const first = yield* call("POST", "/api/v1/chat", { ...auth, body: { content: "first", title: "Socket" } })
          const conversationId = first.body.conversationId
          yield* call("POST", `/api/v1/conversations/${conversationId}/chat`, { ...auth, body: { content: "second" } })
          const thread = yield* call("POST", `/api/v1/conversations/${conversationId}/threads`, {
            ...auth,
            body: { messageId: first.body.answer.id, title: "Aside" }
          })
          expect(thread.status).toBe(201)

          const socket = yield* connect({ authorization: `Bearer ${user.accessToken}` })
          yield* next(socket)
          yield* send(socket, { type: "chat", ref: "t", conversationId, threadId: thread.body.id, content: "aside" })
          const inThread = yield* untilDone(socket)
          expect(inThread[0]).toMatchObject({ ref: "t", event: { question: { threadId: thread.body.id } } })
          expect(inThread.at(-1)!.event.message).toMatchObject({ threadId: thread.body.id, status: "complete" })

          yield* send(socket, {
            type: "chat",
            ref: "b",
            conversationId,
            parentId: first.body.answer.id,
            content: "again"
          })
          const branched = yield* untilDone(socket)
          expect(branched[0]!.event.question).toMatchObject({ parentId: first.body.answer.id, threadId: null })
          const messages = yield* call("GET", `/api/v1/conversations/${conversationId}/messages`, auth)
          expect(messages.body.items.map((message: any) => message.content).slice(0, 2)).toEqual([
            "first",
            expect.any(String)
          ])
          expect(messages.body.items.map((message: any) => message.content)).toContain("again")
          expect(messages.body.items.map((message: any) => message.content)).not.toContain("second")

          // Misplaced fields are refused, naming why; nothing is stored.
          yield* send(socket, { type: "chat", ref: "p", parentId: first.body.answer.id, content: "where?" })
          expect(yield* next(socket)).toMatchObject({ type: "error", ref: "p", error: { _tag: "ValidationError" } })
          yield* send(socket, {
            type: "chat",
            ref: "both",
            conversationId,
            threadId: thread.body.id,
            parentId: first.body.answer.id,
            content: "both?"
          })
          expect(yield* next(socket)).toMatchObject({ type: "error", ref: "both", error: { _tag: "ValidationError" } })
        }))
    })

    describe("credentials checked again", () => {
      it.scoped("after signing out, the next message gets Unauthorized and the socket is closed (1008)", () =>
        Effect.gen(function*() {
          const leaving = yield* signUp()
          const socket = yield* connect({ authorization: `Bearer ${leaving.accessToken}` })
          expect(yield* next(socket)).toEqual({ type: "ready", userId: leaving.id })
          expect((yield* call("POST", "/api/v1/auth/logout", { auth: leaving.accessToken })).status).toBe(204)
          yield* send(socket, { type: "chat", ref: "late", content: "still there?" })
          expect(yield* next(socket)).toMatchObject({ type: "error", ref: "late", error: { _tag: "Unauthorized" } })
          expect(yield* closing(socket)).toEqual({ code: 1008, reason: "Credentials expired or revoked" })
          // Nothing was stored for that message.
          const again = yield* signIn(leaving.email, leaving.password)
          const listed = yield* call("GET", "/api/v1/conversations", { auth: again.accessToken })
          expect(listed.body.items).toEqual([])
        }))

      it.scoped("a user disabled while the socket is idle: closed at the next check, without a message", () =>
        Effect.gen(function*() {
          const { admin } = yield* TheCast
          const disabled = yield* signUp()
          const socket = yield* connect({ authorization: `Bearer ${disabled.accessToken}` })
          expect(yield* next(socket)).toEqual({ type: "ready", userId: disabled.id })
          const refused = yield* call("POST", `/api/v1/admin/users/${disabled.id}/disable`, { auth: admin.accessToken })
          expect(refused.status).toBeLessThan(300)
          expect(yield* closing(socket)).toEqual({ code: 1008, reason: "Credentials expired or revoked" })
          expect(socket.frames).toEqual([])
        }))

      it.scoped("a socket that stays signed in keeps working past several checks", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const socket = yield* connect({ authorization: `Bearer ${user.accessToken}` })
          yield* next(socket)
          yield* sleep(2_500)
          expect(socket.closed).toBeNull()
          yield* send(socket, { type: "chat", content: "after a while" })
          const frames = yield* untilDone(socket)
          expect(frames.at(-1)!.event.message.status).toBe("complete")
        }))

      it.scoped("a socket that never signs in is closed at the first check", () =>
        Effect.gen(function*() {
          const socket = yield* connect()
          expect(yield* closing(socket)).toEqual({ code: 1008, reason: "Not signed in" })
        }))
    })

    describe("refused messages", () => {
      it.scoped("malformed or unknown messages and another user's conversation: typed errors, socket open", () =>
        Effect.gen(function*() {
          const { other, user } = yield* TheCast
          const socket = yield* connect({ authorization: `Bearer ${user.accessToken}` })
          yield* next(socket)
          yield* Effect.sync(() => socket.ws.send("not json"))
          expect((yield* next(socket)).error._tag).toBe("ValidationError")
          yield* send(socket, { type: "shout", content: "hey" })
          expect((yield* next(socket)).error._tag).toBe("ValidationError")
          yield* send(socket, { type: "chat", content: "" })
          expect((yield* next(socket)).error._tag).toBe("ValidationError")

          const theirs = yield* call("POST", "/api/v1/conversations", { auth: other.accessToken, body: {} })
          yield* send(socket, { type: "chat", ref: "x", conversationId: theirs.body.id, content: "mine?" })
          expect(yield* next(socket)).toMatchObject({ type: "error", ref: "x", error: { _tag: "NotFound" } })

          // Still open and usable.
          yield* send(socket, { type: "chat", content: "still here" })
          const frames = yield* untilDone(socket)
          expect(frames.at(-1)!.event.message.status).toBe("complete")
        }))
    })

    describe("cancel and the acknowledgement window", () => {
      it.scoped("cancel by message ends the answer cancelled, its text kept", () =>
        Effect.gen(function*() {
          const { user } = yield* TheCast
          const socket = yield* connect({ authorization: `Bearer ${user.accessToken}` })
          yield* next(socket)
          yield* send(socket, { type: "chat", content: "please take your time answering this question" })
          const start = (yield* next(socket)).event
          yield* next(socket) // a first delta
          yield* send(socket, { type: "cancel", conversationId: start.conversationId, messageId: start.answer.id })
          const frames = yield* untilDone(socket)
          const done = frames.at(-1)!.event
          expect(done.message.status).toBe("cancelled")
          expect(done.message.content.length).toBeGreaterThan(0)
        }))

      it.scoped(
        "a client that stops reading gets no more than the window; the answer is stored meanwhile",
        () =>
          Effect.gen(function*() {
            const { user } = yield* TheCast
            const socket = yield* connect({ authorization: `Bearer ${user.accessToken}` })
            yield* next(socket)
            // About 100 words: more events than the window (the development model sends one a word).
            const question = Array.from({ length: 100 }, (_, index) => `word${index}`).join(" ")
            yield* send(socket, { type: "chat", content: question })
            const start = (yield* next(socket)).event
            // No acknowledgement: long enough for the whole answer to be generated (20 ms a word).
            yield* sleep(3_500)
            expect(socket.frames.length + 1).toBe(window)
            const stored = yield* call(
              "GET",
              `/api/v1/conversations/${start.conversationId}/messages/${start.answer.id}`,
              { auth: user.accessToken }
            )
            expect(stored.body.status).toBe("complete")
            // Reading on, the client gets the rest, in order.
            const frames = yield* untilDone(socket, start.answer.id)
            const ids = [start.id, ...frames.map((frame) => frame.event.id)]
            expect(ids).toEqual(ids.map((_, index) => index + 1))
            expect(frames.at(-1)!.event.message.content).toBe(stored.body.content)
          }),
        { timeout: 20_000 }
      )
    })
  })
}
