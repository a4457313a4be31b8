/**
 * What the registry and the chat engine ask of a model provider, whatever API
 * it speaks, and the HTTP plumbing every adapter shares: a timeout on every
 * call, streamed bodies read as NDJSON lines or server-sent events, and
 * failures turned into `ProviderUnreachable` / `ProviderTimeout` /
 * `ProviderError` instead of hangs or defects.
 */
import * as Sse from "@effect/experimental/Sse"
import { HttpClient, type HttpClientError, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { Clock, Duration, Effect, type Option, type Redacted, Schema, Stream } from "effect"
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
const retryAfterMs = (header: string | undefined, now: number): number | undefined => {
  const value = header?.trim() ?? ""
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value) - now
  return Number.isFinite(ms) ? Math.max(0, Math.round(ms)) : undefined
}

const checkStatus = (connection: ProviderConnection) => (response: HttpClientResponse.HttpClientResponse) =>
  response.status >= 200 && response.status < 300
    ? Effect.succeed(response)
    : Effect.flatMap(Clock.currentTimeMillis, (now) => {
      const retryAfter = retryAfterMs(response.headers["retry-after"], now)
      return Effect.fail(
        new ProviderError({
          message: describeStatus(connection.name, response.status),
          upstreamStatus: response.status,
          ...(retryAfter === undefined ? {} : { retryAfterMs: retryAfter })
        })
      )
    })

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

/** Decodes one JSON piece of a streamed answer (a line, an event's data) with `schema`. */
export const decodePiece = <A, I>(connection: ProviderConnection, schema: Schema.Schema<A, I>) => {
  const decode = Schema.decodeUnknown(Schema.parseJson(schema))
  return (text: string): Effect.Effect<A, ProviderError> =>
    Effect.mapError(decode(text), () => notUnderstood(connection))
}

/** A newline-delimited JSON body as its decoded lines. */
export const ndjsonLines = <A, I>(connection: ProviderConnection, schema: Schema.Schema<A, I>) =>
(
  text: Stream.Stream<string, ProviderFailure>
): Stream.Stream<A, ProviderFailure> =>
  text.pipe(
    Stream.splitLines,
    Stream.filter((line) => line.trim().length > 0),
    Stream.mapEffect(decodePiece(connection, schema))
  )

/** A `text/event-stream` body as its events (`retry:` fields are ignored: the server decides on retries). */
export const sseEvents = (connection: ProviderConnection) =>
(
  text: Stream.Stream<string, ProviderFailure>
): Stream.Stream<Sse.Event, ProviderFailure> =>
  Stream.suspend(() => {
    const parsed: Array<Sse.Event> = []
    const parser = Sse.makeParser((event) => {
      if (event._tag === "Event") parsed.push(event)
    })
    return Stream.mapConcatEffect(text, (piece) =>
      Effect.suspend(() =>
        parser.feed(piece) === undefined ? Effect.succeed(parsed.splice(0)) : Effect.fail(notUnderstood(connection))
      ))
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
