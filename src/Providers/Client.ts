/**
 * What the registry and the chat engine ask of a model provider, whatever API
 * it speaks, and the HTTP plumbing every adapter shares: a timeout on every
 * call, streamed bodies read as NDJSON lines or server-sent events, and
 * failures turned into `ProviderUnreachable` / `ProviderTimeout` /
 * `ProviderError` instead of hangs or defects.
 */
import * as Sse from "@effect/experimental/Sse"
import {
  HttpClient,
  type HttpClientError,
  HttpClientRequest,
  type HttpClientResponse,
  UrlParams
} from "@effect/platform"
import {
  Chunk,
  Clock,
  Duration,
  Effect,
  Either,
  Exit,
  FiberId,
  Option,
  type Redacted,
  Runtime,
  Schema,
  Scope,
  Stream
} from "effect"
import * as Http from "node:http"
import * as Https from "node:https"
import type { ProviderKind } from "../Domain/Model.js"
import { ProviderError, type ProviderFailure, ProviderTimeout, ProviderUnreachable } from "../Models/Errors.js"
import type { ChatChunk, ChatRequest } from "./Chat.js"
import type { Embedder } from "./Embeddings.js"

/** Where a provider is and how to talk to it: a provider row with its credential decrypted. */
export interface ProviderConnection {
  readonly name: string
  readonly kind: ProviderKind
  readonly baseUrl: string
  readonly credential: Option.Option<Redacted.Redacted<string>>
  /** Bounds quick calls (health, listings) and the wait for a connection. */
  readonly connectTimeoutMs: number
  /** Bounds long calls (loading a model) and the silence between two chunks of a stream. */
  readonly requestTimeoutMs: number
}

/** A model as a provider lists it. */
export interface DiscoveredModel {
  readonly providerModel: string
  readonly displayName: string
  readonly contextWindow: number | null
  readonly capabilities: ReadonlyArray<string>
  readonly metadata: Record<string, unknown>
}

/** One line of a model download's progress. */
export interface PullProgress {
  readonly status: string
  readonly total: number | null
  readonly completed: number | null
}

/** What only a server that runs models itself (Ollama) can do: load, unload, download. */
export interface LocalRuntime {
  /** The provider model names loaded in memory now. */
  readonly running: Effect.Effect<ReadonlyArray<string>, ProviderFailure>
  readonly load: (model: string) => Effect.Effect<void, ProviderFailure>
  readonly unload: (model: string) => Effect.Effect<void, ProviderFailure>
  readonly pull: (model: string) => Stream.Stream<PullProgress, ProviderFailure>
  readonly describe: (model: string) => Effect.Effect<DiscoveredModel, ProviderFailure>
}

export interface ProviderClient {
  /**
   * A chat answer as a stream of chunks. Failures before the first chunk are
   * retried (connection, 429, 5xx); the stream fails with a `ProviderFailure`
   * on timeouts, on errors after the first chunk, and while the provider's
   * circuit is open. Interrupting the stream aborts the upstream request.
   */
  readonly chat: (request: ChatRequest) => Stream.Stream<ChatChunk, ProviderFailure>
  /** The same answer as a feed, for a reader that takes every chunk as it comes (the chat engine). */
  readonly answer: OpenAnswer
  readonly listModels: Effect.Effect<ReadonlyArray<DiscoveredModel>, ProviderFailure>
  /** A cheap authenticated call, to tell whether the provider answers. */
  readonly ping: Effect.Effect<void, ProviderFailure>
  readonly runtime: Option.Option<LocalRuntime>
  /** Embeddings, where the provider's API has them (not Anthropic's). */
  readonly embedder: Option.Option<Embedder>
  /** An exact count of a prompt's tokens, where the provider's API has one (Anthropic's). */
  readonly tokenCounter: Option.Option<TokenCounter>
}

/** How many input tokens a request's prompt (its messages, system prompt and tools) is, as the provider counts them. */
export type TokenCounter = (request: ChatRequest) => Effect.Effect<number, ProviderFailure>

/** `base` + `path`, where an OpenAI-style base may or may not already end in `/v1`. */
export const joinUrl = (base: string, path: string): string => {
  const trimmed = base.replace(/\/+$/, "")
  return path.startsWith("/v1/") && trimmed.endsWith("/v1") ? `${trimmed}${path.slice(3)}` : `${trimmed}${path}`
}

const describeStatus = (name: string, status: number) =>
  status === 401 || status === 403
    ? `${name} rejected the credential (HTTP ${status})`
    : status === 404
    ? `${name} does not know this resource (HTTP 404)`
    : status === 429
    ? `${name} is rate limiting (HTTP 429)`
    : `${name} answered HTTP ${status}`

const fromHttpError = (connection: ProviderConnection) => (error: HttpClientError.HttpClientError) =>
  error._tag === "RequestError"
    ? new ProviderUnreachable({ message: `${connection.name} cannot be reached at its base URL` })
    : new ProviderError({
      message: `${connection.name} sent a malformed answer`,
      upstreamStatus: error.response.status
    })

/** `Retry-After` (seconds or an HTTP date) as milliseconds from `now`. */
const retryAfterMillis = (header: string | undefined, now: number): number | undefined => {
  const value = header?.trim() ?? ""
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value) - now
  return Number.isFinite(ms) ? Math.max(0, Math.round(ms)) : undefined
}

/** A failure status as the error it means, with the provider's `Retry-After` (relative to `now`). */
const statusFailure = (connection: ProviderConnection, status: number, retryAfter: string | undefined, now: number) => {
  const retryAfterMs = retryAfterMillis(retryAfter, now)
  return new ProviderError({
    message: describeStatus(connection.name, status),
    upstreamStatus: status,
    ...(retryAfterMs === undefined ? {} : { retryAfterMs })
  })
}

const checkStatus = (connection: ProviderConnection) => (response: HttpClientResponse.HttpClientResponse) =>
  response.status >= 200 && response.status < 300
    ? Effect.succeed(response)
    : Effect.flatMap(
      Clock.currentTimeMillis,
      (now) => Effect.fail(statusFailure(connection, response.status, response.headers["retry-after"], now))
    )

const timedOut = (connection: ProviderConnection, timeoutMs: number) => () =>
  new ProviderTimeout({ message: `${connection.name} did not answer within ${timeoutMs} ms`, timeoutMs })

/** Sends `request` and decodes its JSON answer with `schema`, all within `timeoutMs`. */
export const requestJson = <A, I>(
  http: HttpClient.HttpClient,
  connection: ProviderConnection,
  request: HttpClientRequest.HttpClientRequest,
  schema: Schema.Schema<A, I>,
  timeoutMs: number = connection.connectTimeoutMs
): Effect.Effect<A, ProviderFailure> =>
  http.execute(request).pipe(
    Effect.mapError(fromHttpError(connection)),
    Effect.flatMap(checkStatus(connection)),
    Effect.flatMap((response) =>
      Effect.flatMap(
        Effect.mapError(response.json, fromHttpError(connection)),
        (body) =>
          Schema.decodeUnknown(schema)(body).pipe(
            Effect.mapError(() =>
              new ProviderError({
                message: `${connection.name} sent an answer this server does not understand`,
                upstreamStatus: response.status
              })
            )
          )
      )
    ),
    Effect.scoped,
    Effect.timeoutFail({ duration: Duration.millis(timeoutMs), onTimeout: timedOut(connection, timeoutMs) })
  )

/** Sends `request` and discards its answer (once it is a success), within `timeoutMs`. */
export const requestVoid = (
  http: HttpClient.HttpClient,
  connection: ProviderConnection,
  request: HttpClientRequest.HttpClientRequest,
  timeoutMs: number
): Effect.Effect<void, ProviderFailure> =>
  http.execute(request).pipe(
    Effect.mapError(fromHttpError(connection)),
    Effect.flatMap(checkStatus(connection)),
    Effect.flatMap((response) => Effect.mapError(response.text, fromHttpError(connection))),
    Effect.asVoid,
    Effect.scoped,
    Effect.timeoutFail({ duration: Duration.millis(timeoutMs), onTimeout: timedOut(connection, timeoutMs) })
  )

/**
 * A streamed answer's body as text. The connect timeout bounds the wait for its
 * status; the request is aborted when the stream ends, fails or is interrupted.
 */
export const requestStream = (
  http: HttpClient.HttpClient,
  connection: ProviderConnection,
  request: HttpClientRequest.HttpClientRequest
): Stream.Stream<string, ProviderFailure> =>
  HttpClient.withScope(http).execute(request).pipe(
    Effect.mapError(fromHttpError(connection)),
    Effect.flatMap(checkStatus(connection)),
    Effect.timeoutFail({
      duration: Duration.millis(connection.connectTimeoutMs),
      onTimeout: timedOut(connection, connection.connectTimeoutMs)
    }),
    Effect.map((response) =>
      Stream.mapError(
        response.stream,
        () => new ProviderError({ message: `${connection.name} broke off its answer`, upstreamStatus: null })
      )
    ),
    Stream.unwrapScoped,
    Stream.decodeText()
  )

const notUnderstood = (connection: ProviderConnection) =>
  new ProviderError({
    message: `${connection.name} sent a part of its answer this server does not understand`,
    upstreamStatus: null
  })

/** An error the provider reported in the middle of its streamed answer (its details are not passed on). */
export const reportedError = (connection: ProviderConnection, upstreamStatus: number | null = null) =>
  new ProviderError({ message: `${connection.name} reported an error during its answer`, upstreamStatus })

/** Decodes one JSON piece of a streamed answer (a line, an event's data) with `schema`, synchronously. */
export const decodePiece = <A, I>(connection: ProviderConnection, schema: Schema.Schema<A, I>) => {
  const decode = Schema.decodeUnknownEither(Schema.parseJson(schema))
  return (text: string): A | ProviderError => {
    const decoded = decode(text)
    return decoded._tag === "Right" ? decoded.right : notUnderstood(connection)
  }
}

/** A newline-delimited JSON body as its decoded lines. */
const ndjsonLines = <A, I>(connection: ProviderConnection, schema: Schema.Schema<A, I>) =>
(
  text: Stream.Stream<string, ProviderFailure>
): Stream.Stream<A, ProviderFailure> => {
  const decode = decodePiece(connection, schema)
  return text.pipe(
    Stream.splitLines,
    Stream.filter((line) => line.trim().length > 0),
    Stream.mapEffect((line) => {
      const piece = decode(line)
      return piece instanceof ProviderError ? Effect.fail(piece) : Effect.succeed(piece)
    })
  )
}

/** How long a streamed answer may stay silent. */
export interface StreamTimeouts {
  /** Until its first chunk (a local model may have to load first). */
  readonly firstChunk: Duration.Duration
  /** Between two chunks. */
  readonly idle: Duration.Duration
}

/** How a streamed answer's body is cut into pieces: server-sent events (their data) or JSON lines. */
export type Framing = "sse" | "ndjson"

/** Cuts text, fed as it arrives, into pieces; `end` gives what is left once the body ended. */
interface Cutter {
  readonly feed: (text: string) => ReadonlyArray<string> | ProviderError
  readonly end: () => ReadonlyArray<string>
}

const sseCutter = (connection: ProviderConnection): Cutter => {
  let pieces: Array<string> = []
  // `retry:` fields are ignored: the server decides on retries.
  const parser = Sse.makeParser((event) => {
    if (event._tag === "Event") pieces.push(event.data)
  })
  const take = () => {
    const taken = pieces
    pieces = []
    return taken
  }
  return {
    feed: (text) => parser.feed(text) === undefined ? take() : notUnderstood(connection),
    // An event is dispatched by the blank line after it: one without it was cut off.
    end: take
  }
}

const lineCutter = (): Cutter => {
  let rest = ""
  const nonBlank = (lines: Array<string>) => lines.filter((line) => line.trim().length > 0)
  return {
    feed: (text) => {
      const lines = (rest + text).split("\n")
      rest = lines.pop()!
      return nonBlank(lines)
    },
    end: () => nonBlank([rest])
  }
}

/**
 * The chunks an adapter makes of one piece of its streamed answer (an event's data, a line), or
 * the failure it reports. The answer ends with its `finish` chunk: nothing after it is read.
 */
export type PieceTranslator = (piece: string) => ReadonlyArray<ChatChunk> | ProviderError

/**
 * Connections to providers for streamed answers, kept alive between requests. `node:http` rather
 * than `fetch`: an open stream costs about a third of the memory.
 */
const agents = {
  "http:": new Http.Agent({ keepAlive: true }),
  "https:": new Https.Agent({ keepAlive: true })
} as const

/** Chunks read but not yet pulled, above which the socket is paused until the reader catches up. */
const highWaterMark = 256

/** How long a finished answer's body may take to end before its connection is closed instead of reused. */
const drainGraceMs = 5_000

/**
 * A streamed answer the provider has started to send (its status was a success). It is read one
 * way or the other, not both:
 * - `pull`: the chunks that came since the last pull, waiting for some; fails with `None` at the
 *   answer's end. A reader that falls behind pauses the socket (back-pressure).
 * - `listen`: hands the chunks not yet pulled, then each batch as the socket delivers it, to
 *   `onChunks` (synchronously, from the socket's callback: no fiber waits for them), then the
 *   answer's end to `onEnd`, once (at once if it is already over). `onChunks` must not block; if it
 *   throws, the answer ends with that defect. The function returned detaches both: nothing more
 *   is called (the answer itself ends with its scope).
 *
 * Either fails with `ProviderTimeout` if no chunk comes within `timeouts.firstChunk` of the
 * status, or within `timeouts.idle` of the previous one, and with `ProviderError` if the answer
 * breaks off or ends before a `finish` chunk.
 */
export interface AnswerFeed {
  readonly pull: Effect.Effect<Chunk.Chunk<ChatChunk>, Option.Option<ProviderFailure>>
  readonly listen: (
    onChunks: (chunks: ReadonlyArray<ChatChunk>) => void,
    onEnd: (exit: Exit.Exit<void, ProviderFailure>) => void
  ) => () => void
}

/** Opens a streamed answer; closing the scope ends it (aborting the request if it is not over). */
export type OpenAnswer = (request: ChatRequest) => Effect.Effect<AnswerFeed, ProviderFailure, Scope.Scope>

/** An answer as a `Stream` of its chunks, pulled as the stream's reader asks for them. */
export const streamOf = (answer: OpenAnswer) => (request: ChatRequest): Stream.Stream<ChatChunk, ProviderFailure> =>
  Stream.unwrapScoped(Effect.map(answer(request), (feed) => Stream.repeatEffectChunkOption(feed.pull)))

/** A feed that pulls `stream` (for answers that are not read from a socket, like the development model's). */
export const feedOf = (
  stream: Stream.Stream<ChatChunk, ProviderFailure>
): Effect.Effect<AnswerFeed, never, Scope.Scope> =>
  Effect.map(Effect.zip(Stream.toPull(stream), Effect.runtime<never>()), ([pull, runtime]): AnswerFeed => ({
    pull,
    listen: (onChunks, onEnd) => {
      const loop: Effect.Effect<void, ProviderFailure> = Effect.matchEffect(pull, {
        onFailure: Option.match({ onNone: () => Effect.void, onSome: Effect.fail }),
        onSuccess: (chunks) => {
          if (chunks.length > 0) onChunks(Chunk.toReadonlyArray(chunks))
          return loop
        }
      })
      let attached = true
      const fiber = Runtime.runFork(runtime)(loop)
      fiber.addObserver((exit) => attached && onEnd(exit))
      return () => {
        attached = false
        fiber.unsafeInterruptAsFork(FiberId.none)
      }
    }
  }))

/**
 * Sends `request` (a streamed chat answer) and reads its body: cut into pieces as they arrive
 * and each translated into chunks by `translate`, synchronously as the socket delivers them (the
 * chat path's hot loop: no stage per piece). Once the body ends, `trailer` may add the last
 * chunks (a finish reason that came before the usage). The wait for the status counts against
 * the connect timeout; then `timeouts` apply (see `AnswerFeed`).
 */
export const openAnswer = (
  connection: ProviderConnection,
  request: HttpClientRequest.HttpClientRequest,
  options: AnswerOptions
): Effect.Effect<AnswerFeed, ProviderFailure, Scope.Scope> =>
  Effect.flatMap(
    send(connection, request),
    ({ outgoing, response }) => readAnswer(connection, outgoing, response, options)
  )

interface AnswerOptions {
  readonly framing: Framing
  readonly timeouts: StreamTimeouts
  readonly translate: PieceTranslator
  readonly trailer?: () => ReadonlyArray<ChatChunk>
}

/**
 * The feed of an answer whose status was a success. Apart from `openAnswer`, whose context holds
 * the request (its body is the whole branch sent): the socket's callbacks live as long as the
 * answer streams, and keep what their context chain holds.
 */
const readAnswer = (
  connection: ProviderConnection,
  outgoing: Http.ClientRequest,
  response: Http.IncomingMessage,
  options: AnswerOptions
): Effect.Effect<AnswerFeed, never, Scope.Scope> =>
  Effect.gen(function*() {
    const cutter = options.framing === "sse" ? sseCutter(connection) : lineCutter()
    const firstMs = Duration.toMillis(options.timeouts.firstChunk)
    const idleMs = Duration.toMillis(options.timeouts.idle)

    /** Chunks read and not yet handed over. */
    let pending: Array<ChatChunk> = []
    /** Set once the answer is over: finished (null) or failed; raised once `pending` is out. */
    let end: { readonly failure: ProviderFailure | null } | null = null
    /** When the last chunk arrived (or the status, before any), for the timeouts. */
    let lastArrival = Date.now()
    let started = false
    /** A pull waiting for chunks. */
    let waiting: ((next: Effect.Effect<Chunk.Chunk<ChatChunk>, Option.Option<ProviderFailure>>) => void) | null = null
    /** The listener's reader, and where the end goes. */
    let consumer: ((chunks: ReadonlyArray<ChatChunk>) => void) | null = null
    let endListener: ((exit: Exit.Exit<void, ProviderFailure>) => void) | null = null

    // A finished answer's connection goes back to the pool once the body is read to its end (the
    // provider has nothing to send after the finish); any other is closed, aborting the request.
    // `Scope.addFinalizer` rather than `Effect.addFinalizer`: the latter keeps a copy of the fiber's
    // refs for as long as the answer is open.
    yield* Scope.addFinalizer(
      yield* Effect.scope,
      Effect.sync(() => {
        clearTimeout(watchdog)
        consumer = null
        if (response.complete) return
        if (end === null || end.failure !== null) return void outgoing.destroy()
        response.resume()
        setTimeout(() => response.complete || outgoing.destroy(), drainGraceMs).unref()
      })
    )

    const take = (): Array<ChatChunk> => {
      const taken = pending
      pending = []
      if (response.isPaused() && end === null) response.resume()
      return taken
    }
    const next = (): Effect.Effect<Chunk.Chunk<ChatChunk>, Option.Option<ProviderFailure>> =>
      pending.length > 0
        ? Effect.succeed(Chunk.unsafeFromArray(take()))
        : Effect.fail(end?.failure ? Option.some(end.failure) : Option.none())
    const deliver = () => {
      if (consumer !== null) {
        if (pending.length > 0) {
          try {
            consumer(take())
          } catch (defect) {
            // A reader's bug, not the provider's: it ends the answer as a defect, out of the socket's callback.
            const resume = endListener
            consumer = null
            endListener = null
            response.destroy()
            return resume?.(Exit.die(defect))
          }
        }
        if (end !== null && endListener !== null) {
          const resume = endListener
          endListener = null
          resume(end.failure === null ? Exit.void : Exit.fail(end.failure))
        }
        return
      }
      if (waiting === null || (pending.length === 0 && end === null)) return
      const resume = waiting
      waiting = null
      resume(next())
    }
    const stop = (failure: ProviderFailure | null) => {
      if (end !== null) return
      end = { failure }
      clearTimeout(watchdog)
      if (failure !== null) response.destroy()
      deliver()
    }
    /** Takes in pieces; stops at the answer's `finish` chunk. */
    const translate = (pieces: ReadonlyArray<string> | ProviderError) => {
      if (pieces instanceof ProviderError) return stop(pieces)
      for (const piece of pieces) {
        const chunks = options.translate(piece)
        if (chunks instanceof ProviderError) return stop(chunks)
        for (const chunk of chunks) {
          pending.push(chunk)
          if (chunk._tag === "finish") return stop(null)
        }
      }
    }

    // One timer per answer, re-armed only when it fires: chunks do not touch it. A reader that
    // has not taken what arrived is not the provider's silence.
    const watch = (): void => {
      if (end !== null) return
      const limitMs = started ? idleMs : firstMs
      const silentMs = Date.now() - lastArrival
      if (pending.length > 0 || silentMs < limitMs) {
        watchdog = setTimeout(watch, pending.length > 0 ? limitMs : limitMs - silentMs)
        return
      }
      stop(
        new ProviderTimeout({
          message: started
            ? `${connection.name} went silent for ${Duration.format(limitMs)} in the middle of an answer`
            : `${connection.name} did not start answering within ${Duration.format(limitMs)}`,
          timeoutMs: Math.round(limitMs)
        })
      )
    }
    let watchdog = setTimeout(watch, firstMs)

    response.setEncoding("utf8")
    response.on("data", (text: string) => {
      if (end !== null) return
      const before = pending.length
      translate(cutter.feed(text))
      if (pending.length > before) {
        lastArrival = Date.now()
        started = true
      }
      if (pending.length > highWaterMark && end === null) response.pause()
      deliver()
    })
    response.on("end", () => {
      if (end !== null) return
      translate(cutter.end())
      if (end !== null) return
      pending.push(...(options.trailer?.() ?? []))
      stop(
        pending.some((chunk) => chunk._tag === "finish") ? null : new ProviderError({
          message: `${connection.name} ended its answer before it was complete`,
          upstreamStatus: null
        })
      )
    })
    response.on("close", () => {
      if (end === null) {
        stop(new ProviderError({ message: `${connection.name} broke off its answer`, upstreamStatus: null }))
      }
    })

    const pull = Effect.async<Chunk.Chunk<ChatChunk>, Option.Option<ProviderFailure>>((resume) => {
      if (pending.length > 0 || end !== null) return resume(next())
      waiting = resume
      return Effect.sync(() => {
        waiting = null
      })
    })
    const listen = (
      onChunks: (chunks: ReadonlyArray<ChatChunk>) => void,
      onEnd: (exit: Exit.Exit<void, ProviderFailure>) => void
    ) => {
      consumer = onChunks
      endListener = onEnd
      deliver()
      return () => {
        consumer = null
        endListener = null
      }
    }
    return { pull, listen } satisfies AnswerFeed
  })

/**
 * For errors after the request is settled. Not a closure of `send`'s: its context (the fiber's
 * resume) would stay on the request for as long as the answer streams.
 */
const ignoreError = () => {}

/**
 * Sends `request` with `node:http(s)`, and waits (at most the connect timeout) for a success
 * status. A failure status is read as the error it means, its body discarded.
 */
const send = (
  connection: ProviderConnection,
  request: HttpClientRequest.HttpClientRequest
): Effect.Effect<{ readonly outgoing: Http.ClientRequest; readonly response: Http.IncomingMessage }, ProviderFailure> =>
  // One callback-driven wait, its timeout a timer: no fiber is forked for a race.
  Effect.async<{ outgoing: Http.ClientRequest; response: Http.IncomingMessage }, ProviderFailure>((resume) => {
    const failUnreachable = () =>
      resume(Effect.fail(new ProviderUnreachable({ message: `${connection.name} cannot be reached at its base URL` })))
    const url = Either.getOrUndefined(UrlParams.makeUrl(request.url, request.urlParams, request.hash))
    if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
      return failUnreachable()
    }
    const body = request.body._tag === "Uint8Array" ? request.body.body : undefined
    const outgoing = (url.protocol === "https:" ? Https : Http).request(url, {
      method: request.method,
      headers: { ...request.headers, ...(body ? { "content-length": String(body.byteLength) } : {}) },
      agent: agents[url.protocol]
    })
    const unreachable = () => {
      clearTimeout(timer)
      failUnreachable()
    }
    const timer = setTimeout(() => {
      outgoing.off("error", unreachable)
      outgoing.on("error", ignoreError)
      outgoing.destroy()
      resume(Effect.fail(timedOut(connection, connection.connectTimeoutMs)()))
    }, connection.connectTimeoutMs)
    outgoing.on("error", unreachable)
    outgoing.once("response", (response) => {
      clearTimeout(timer)
      outgoing.off("error", unreachable)
      // Failures after this point reach the response (`close` before `end`).
      outgoing.on("error", ignoreError)
      const status = response.statusCode ?? 0
      if (status >= 200 && status < 300) return resume(Effect.succeed({ outgoing, response }))
      outgoing.destroy()
      const retryAfter = response.headers["retry-after"]
      resume(Effect.fail(statusFailure(connection, status, retryAfter, Date.now())))
    })
    outgoing.end(body)
    return Effect.sync(() => {
      clearTimeout(timer)
      outgoing.destroy()
    })
  })

/**
 * A newline-delimited JSON answer as a stream of decoded lines. The stream
 * fails if the provider stays silent for `idleTimeoutMs` between two lines.
 */
export const requestNdjson = <A, I>(
  http: HttpClient.HttpClient,
  connection: ProviderConnection,
  request: HttpClientRequest.HttpClientRequest,
  schema: Schema.Schema<A, I>,
  idleTimeoutMs: number
): Stream.Stream<A, ProviderFailure> =>
  requestStream(http, connection, request).pipe(
    ndjsonLines(connection, schema),
    Stream.timeoutFail(timedOut(connection, idleTimeoutMs), Duration.millis(idleTimeoutMs))
  )

/** `body` as a JSON POST to `path` of the provider. */
export const postJson = (connection: ProviderConnection, path: string, body: unknown) =>
  HttpClientRequest.bodyUnsafeJson(HttpClientRequest.post(joinUrl(connection.baseUrl, path)), body)

/** A tool call's JSON text as the object the APIs that want one (Anthropic, Ollama) expect. */
export const argumentsObject = (text: string): Record<string, unknown> => {
  try {
    const value: unknown = JSON.parse(text)
    return typeof value === "object" && value !== null && !Array.isArray(value) ? { ...value } : {}
  } catch {
    return {}
  }
}

export const withBearer = (connection: ProviderConnection) => (request: HttpClientRequest.HttpClientRequest) =>
  connection.credential._tag === "Some"
    ? HttpClientRequest.bearerToken(request, connection.credential.value)
    : request
