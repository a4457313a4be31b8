/**
 * What every request goes through, whatever it asks for: a request id
 * (`x-request-id`, honoured when the client sends a sane one), security
 * headers, and one structured log line with the matched route, the status and
 * the duration, also counted in the metrics (`Metrics.ts`).
 *
 * Headers are added by a pre-response handler: the platform writes error
 * responses from inside the app, so that is the one hook that sees every
 * response, successful or not.
 */
import { Headers, HttpApp, HttpMiddleware, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Clock, Context, Duration, Effect, Exit, FiberRef, HashMap, Option } from "effect"
import { globalValue } from "effect/GlobalValue"
import * as Crypto from "node:crypto"
import { httpRequestDuration, httpRequests, labels } from "../Metrics.js"

/** The id of the request being served, for logs and error bodies. */
export const CurrentRequestId = globalValue("webplus/CurrentRequestId", () => FiberRef.unsafeMake<string>(""))

export interface Client {
  /** The client's address: the socket's peer, or with TRUST_PROXY the address the proxy saw. */
  readonly address: string | null
  readonly userAgent: string | null
}

/** Who is on the other end of the request being served, for rate limits and the audit trail. */
export const CurrentClient = globalValue(
  "webplus/CurrentClient",
  () => FiberRef.unsafeMake<Client>({ address: null, userAgent: null })
)

const clientOf = (request: HttpServerRequest.HttpServerRequest, trustProxy: boolean): Client => {
  // The right-most hop is the one the trusted proxy appended; anything left of it came from the client.
  const forwarded = trustProxy ? request.headers["x-forwarded-for"]?.split(",").at(-1)?.trim() : undefined
  const address = forwarded || Option.getOrNull(request.remoteAddress)
  const userAgent = request.headers["user-agent"]
  return { address: address ?? null, userAgent: userAgent ? userAgent.slice(0, 512) : null }
}

const requestIdPattern = /^[A-Za-z0-9._:-]{1,128}$/

/** What an HTTP request passes on to the code that serves it in other fibers. */
export interface PassedOn {
  readonly client: Client
  readonly requestId: string
}

/**
 * Carries the client (address, user agent) and the id of an HTTP request to the code that serves
 * it in other fibers (the RPC server handles a request's messages apart from the request): a
 * header this middleware sets on the request it passes on, sealed with a secret of this process so
 * that no client can set it itself. Read back with `passedOn`.
 */
const passedOnHeader = "x-webplus-client"
const passedOnSeal = Crypto.randomBytes(32).toString("base64url")

const seal = (passed: PassedOn): string =>
  `${passedOnSeal}.${
    Buffer.from(JSON.stringify({ ...passed.client, requestId: passed.requestId })).toString("base64url")
  }`

/** What an HTTP request's headers carry (see `passedOnHeader`), if this process sealed them. */
export const passedOn = (headers: Headers.Headers): PassedOn | null => {
  const [sealed, body] = (headers[passedOnHeader] ?? "").split(".")
  if (sealed === undefined || body === undefined || sealed.length !== passedOnSeal.length) return null
  if (!Crypto.timingSafeEqual(Buffer.from(sealed), Buffer.from(passedOnSeal))) return null
  try {
    const fields = JSON.parse(Buffer.from(body, "base64url").toString("utf8")) as Client & { requestId?: string }
    return {
      client: { address: fields.address ?? null, userAgent: fields.userAgent ?? null },
      requestId: typeof fields.requestId === "string" ? fields.requestId : ""
    }
  } catch {
    return null
  }
}

const apiSecurityHeaders = {
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
  "cross-origin-opener-policy": "same-origin",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'"
} as const

// The interactive reference is an HTML page with an inline script bundle.
const docsSecurityHeaders = {
  ...apiSecurityHeaders,
  "x-frame-options": "SAMEORIGIN",
  "content-security-policy":
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; frame-ancestors 'self'"
} as const

/**
 * Keeps credentials out of the request's span, which is exported with `OTEL_EXPORTER_OTLP_ENDPOINT`:
 * the platform records the URL and the headers on it (`authorization`, `x-api-key` and cookies
 * redacted), but a browser's WebSocket can only send a token in the query (`access_token`) or as a
 * subprotocol (`Sec-WebSocket-Protocol`).
 */
const redactCredentials = (request: HttpServerRequest.HttpServerRequest) =>
  request.headers["sec-websocket-protocol"] === undefined && !request.url.includes("access_token=")
    ? Effect.void
    : Effect.flatMap(Effect.option(Effect.currentSpan), (span) =>
      Effect.sync(() => {
        if (Option.isNone(span)) return
        const { attributes } = span.value
        if (attributes.has("http.request.header.sec-websocket-protocol")) {
          span.value.attribute("http.request.header.sec-websocket-protocol", "<redacted>")
        }
        const full = attributes.get("url.full")
        if (typeof full !== "string" || !URL.canParse(full)) return
        const url = new URL(full)
        if (!url.searchParams.has("access_token")) return
        url.searchParams.set("access_token", "<redacted>")
        span.value.attribute("url.full", url.toString())
        span.value.attribute("url.query", url.search.slice(1))
      }))

/** The route pattern the router matched, which it records on the request span. */
const matchedRoute = Effect.map(
  Effect.option(Effect.currentSpan),
  Option.flatMap((span) => Option.fromNullable(span.attributes.get("http.route")).pipe(Option.map(String)))
)

export const requestContext = (options: {
  readonly docsPath: string
  readonly trustProxy: boolean
  /** Sent as `Strict-Transport-Security` when set. */
  readonly hstsMaxAge: Option.Option<Duration.Duration>
  /** Paths (and what is below them) whose handlers read the client and the request id from the request's headers (`passedOn`). */
  readonly passClientOn: ReadonlyArray<string>
}) =>
  HttpMiddleware.make((app) => {
    const transportSecurity = Option.match(options.hstsMaxAge, {
      onNone: () => ({}),
      onSome: (maxAge) => ({ "strict-transport-security": `max-age=${Math.floor(Duration.toSeconds(maxAge))}` })
    })
    return Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      const incoming = request.headers["x-request-id"]
      const requestId = incoming !== undefined && requestIdPattern.test(incoming) ? incoming : Crypto.randomUUID()
      const path = request.url.split("?")[0] ?? ""
      yield* redactCredentials(request)
      const securityHeaders = path === options.docsPath ? docsSecurityHeaders : apiSecurityHeaders
      const start = yield* Clock.currentTimeNanos
      let status = 500

      yield* HttpApp.appendPreResponseHandler((_request, response) => {
        status = response.status
        return Effect.succeed(HttpServerResponse.setHeaders(response, {
          ...securityHeaders,
          ...transportSecurity,
          ...(Headers.has(response.headers, "cache-control") ? {} : { "cache-control": "no-store" }),
          "x-request-id": requestId
        }))
      })

      const logLine = (interrupted: boolean) =>
        Effect.gen(function*() {
          // 499: the client went away before the answer was written.
          const finalStatus = interrupted ? 499 : status
          const matched = yield* matchedRoute
          const route = Option.getOrElse(matched, () => path)
          const elapsed = Number((yield* Clock.currentTimeNanos) - start)
          const durationMs = Math.round(elapsed / 1e4) / 100
          // A path no route matched is counted as such: its text could be anything.
          const routeName = Option.getOrElse(matched, () => "unmatched")
          httpRequests.unsafeUpdate(
            1,
            labels(["method", request.method], ["route", routeName], ["status", String(finalStatus)])
          )
          httpRequestDuration.unsafeUpdate(elapsed / 1e9, labels(["method", request.method], ["route", routeName]))
          yield* (finalStatus >= 500 ? Effect.logError("request") : Effect.logInfo("request")).pipe(
            Effect.annotateLogs({ method: request.method, route, status: finalStatus, durationMs })
          )
        })

      const client = clientOf(request, options.trustProxy)
      // The server runs each request in a fiber of its own, which ends with it: what the request
      // carries is set on that fiber rather than scoped around the app, which keeps the fiber of a
      // long response (a stream) shallow.
      yield* FiberRef.set(CurrentRequestId, requestId)
      yield* FiberRef.set(CurrentClient, client)
      yield* FiberRef.update(FiberRef.currentLogAnnotations, HashMap.set("requestId", requestId as unknown))
      if (options.passClientOn.some((prefix) => path === prefix || path.startsWith(`${prefix}/`))) {
        // Whatever a client sent in the header is replaced: only this middleware sets it.
        const sealed = request.modify({
          headers: Headers.set(request.headers, passedOnHeader, seal({ client, requestId }))
        })
        yield* FiberRef.update(FiberRef.currentContext, Context.add(HttpServerRequest.HttpServerRequest, sealed))
      }
      return yield* Effect.onExit(app, (exit) => logLine(Exit.isInterrupted(exit)))
    })
  })
