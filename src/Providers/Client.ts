/**
 * What the registry and the chat engine ask of a model provider, whatever API
 * it speaks, and the HTTP plumbing every adapter shares: a timeout on every
 * call, streamed bodies read as NDJSON lines or server-sent events, and
 * failures turned into `ProviderUnreachable` / `ProviderTimeout` /
 * `ProviderError` instead of hangs or defects.
 */
import * as Sse from "@effect/experimental/Sse"
import {
  Headers,
  HttpClient,
  type HttpClientError,
  HttpClientRequest,
  type HttpClientResponse,
  UrlParams
} from "@effect/platform"
import { Chunk, Clock, Duration, Effect, Either, Option, type Redacted, Schema, Stream } from "effect"
import type { ProviderKind } from "../Domain/Model.js"
import { ProviderError, type ProviderFailure, ProviderTimeout, ProviderUnreachable } from "../Models/Errors.js"
import type { ChatChunk, ChatRequest } from "./Chat.js"

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
  readonly listModels: Effect.Effect<ReadonlyArray<DiscoveredModel>, ProviderFailure>
  /** A cheap authenticated call, to tell whether the provider answers. */
  readonly ping: Effect.Effect<void, ProviderFailure>
  readonly runtime: Option.Option<LocalRuntime>
}

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
    message: status >= 200 && status < 300
      ? `${connection.name} sent an answer without a body`
      : describeStatus(connection.name, status),
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
 * A streamed chat answer: `request` is sent, its body cut into pieces as they arrive and each
 * translated into chunks by `translate`, in one step per read from the socket (the chat path's
 * hot loop: no stage per piece). Once the body ends, `trailer` may add the last chunks (a
 * finish reason that came before the usage).
 *
 * Fails with `ProviderTimeout` if no chunk comes within `timeouts.firstChunk` of the request,
 * or within `timeouts.idle` of the previous one (the wait for the status counts against the
 * connect timeout), and with `ProviderError` if the body ends before a `finish` chunk (cut
 * short). The request is aborted when the stream ends, fails or is interrupted.
 */
export const streamAnswer = (
  connection: ProviderConnection,
  request: HttpClientRequest.HttpClientRequest,
  options: {
    readonly framing: Framing
    readonly timeouts: StreamTimeouts
    readonly translate: PieceTranslator
    readonly trailer?: () => ReadonlyArray<ChatChunk>
  }
): Stream.Stream<ChatChunk, ProviderFailure> =>
  Stream.unwrapScoped(Effect.gen(function*() {
    const controller = new AbortController()
    yield* Effect.addFinalizer(() => Effect.sync(() => controller.abort()))
    const response = yield* send(connection, request, controller.signal)
    const reader = response.body!.getReader()
    const cutter = options.framing === "sse" ? sseCutter(connection) : lineCutter()
    const text = new TextDecoder()
    const firstMs = Duration.toMillis(options.timeouts.firstChunk)
    const idleMs = Duration.toMillis(options.timeouts.idle)
    let started = false
    let ended = false
    /** A failure that came after chunks read in the same step: it is raised once those are out. */
    let failed: ProviderFailure | null = null

    const silent = (limitMs: number) =>
      new ProviderTimeout({
        message: started
          ? `${connection.name} went silent for ${Duration.format(limitMs)} in the middle of an answer`
          : `${connection.name} did not start answering within ${Duration.format(limitMs)}`,
        timeoutMs: Math.round(limitMs)
      })

    /** The next chunks: read until the pieces read make at least one, or the answer ends. */
    const pull = Effect.async<Chunk.Chunk<ChatChunk>, Option.Option<ProviderFailure>>((resume) => {
      if (ended) return resume(Effect.fail(failed === null ? Option.none() : Option.some(failed)))
      const limitMs = started ? idleMs : firstMs
      let waiting = true
      const settle = (next: Effect.Effect<Chunk.Chunk<ChatChunk>, Option.Option<ProviderFailure>>) => {
        if (!waiting) return
        waiting = false
        clearTimeout(timer)
        resume(next)
      }
      const out: Array<ChatChunk> = []
      const fail = (error: ProviderFailure) => {
        ended = true
        if (out.length === 0) return settle(Effect.fail(Option.some(error)))
        failed = error
        settle(Effect.succeed(Chunk.unsafeFromArray(out)))
      }
      const timer = setTimeout(() => {
        fail(silent(limitMs))
        controller.abort()
      }, limitMs)
      /** Takes in pieces; true once the answer is finished. */
      const take = (pieces: ReadonlyArray<string>): boolean | ProviderError => {
        for (const piece of pieces) {
          const chunks = options.translate(piece)
          if (chunks instanceof ProviderError) return chunks
          for (const chunk of chunks) {
            out.push(chunk)
            if (chunk._tag === "finish") return true
          }
        }
        return false
      }
      const onRead = ({ done, value }: { readonly done: boolean; readonly value?: Uint8Array | undefined }): void => {
        if (!waiting) return
        let finished = false
        if (done) {
          const taken = take(cutter.end())
          if (taken instanceof ProviderError) return fail(taken)
          if (!taken) {
            for (const chunk of options.trailer?.() ?? []) {
              out.push(chunk)
              finished ||= chunk._tag === "finish"
            }
          }
          finished ||= taken
          if (!finished) {
            return fail(
              new ProviderError({
                message: `${connection.name} ended its answer before it was complete`,
                upstreamStatus: null
              })
            )
          }
        } else {
          const pieces = cutter.feed(text.decode(value, { stream: true }))
          const taken = pieces instanceof ProviderError ? pieces : take(pieces)
          if (taken instanceof ProviderError) return fail(taken)
          finished = taken
        }
        if (finished) ended = true
        else if (out.length === 0) return void reader.read().then(onRead, onBreak)
        started = true
        settle(Effect.succeed(Chunk.unsafeFromArray(out)))
      }
      const onBreak = () =>
        fail(new ProviderError({ message: `${connection.name} broke off its answer`, upstreamStatus: null }))
      reader.read().then(onRead, onBreak)
      return Effect.sync(() => {
        waiting = false
        clearTimeout(timer)
      })
    })
    return Stream.repeatEffectChunkOption(pull)
  }))

/**
 * Sends `request` with `fetch`, and waits (at most the connect timeout) for a success status and
 * a body: the hot path of a chat owns its response, to read it without a stage per chunk.
 */
const send = (
  connection: ProviderConnection,
  request: HttpClientRequest.HttpClientRequest,
  signal: AbortSignal
): Effect.Effect<Response, ProviderFailure> =>
  Effect.tryPromise({
    try: () =>
      fetch(Either.getOrThrow(UrlParams.makeUrl(request.url, request.urlParams, request.hash)), {
        method: request.method,
        // As `FetchHttpClient` does: fetch sets the length of the body itself.
        headers: Headers.remove(request.headers, "content-length"),
        body: request.body._tag === "Uint8Array" ? request.body.body : null,
        // A provider answering 3xx is reported as an error, and a credential is never replayed to another host.
        redirect: "manual",
        signal
      }),
    catch: () => new ProviderUnreachable({ message: `${connection.name} cannot be reached at its base URL` })
  }).pipe(
    Effect.flatMap((response) =>
      response.ok && response.body !== null
        ? Effect.succeed(response)
        : Effect.flatMap(
          Clock.currentTimeMillis,
          (now) =>
            Effect.fail(
              statusFailure(connection, response.status, response.headers.get("retry-after") ?? undefined, now)
            )
        )
    ),
    Effect.timeoutFail({
      duration: Duration.millis(connection.connectTimeoutMs),
      onTimeout: timedOut(connection, connection.connectTimeoutMs)
    })
  )

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
