/**
 * The one error model, applied in one place around the whole API:
 *
 * - a request that does not match its schema answers `422 ValidationError`
 *   with the failing fields (the platform would answer 400);
 * - a body that is not JSON answers `422 ValidationError`;
 * - a body over `MAX_BODY_SIZE` answers `413 PayloadTooLarge`: refused up front
 *   when `Content-Length` says so, else as soon as reading crosses the limit
 *   (a file upload's limit is `FILES_MAX_SIZE`, its handler enforcing it per file);
 * - an unknown route answers `404 NotFound`.
 *
 * Typed errors that some endpoint declares pass through to be encoded by the
 * API, with a `Retry-After` header when they say how long to wait
 * (`retryAfterMs`, `retryAfterSeconds`: a provider's 429, an open circuit).
 * A database that cannot be reached answers `503 ServiceUnavailable` with
 * `Retry-After` (logged as one warning). Anything else (a defect, an
 * undeclared error) is logged with its cause and answered `500 InternalError`
 * carrying only the request id.
 */
import {
  HttpApi,
  HttpApiBuilder,
  HttpApiError,
  type HttpApiGroup,
  HttpApiSchema,
  HttpApp,
  HttpIncomingMessage,
  HttpServerError,
  HttpServerRequest,
  HttpServerResponse
} from "@effect/platform"
import { Cause, Effect, FiberRef, Option, Schema } from "effect"
import { gatewayPrefix } from "../ApiBeside.js"
import { AppConfig } from "../Config.js"
import { importPath } from "../Conversations/Api.js"
import {
  FieldIssue,
  InternalError,
  NotFound,
  PayloadTooLarge,
  ServiceUnavailable,
  ValidationError
} from "../Domain/Errors.js"
import { uploadOverheadBytes, uploadPath } from "../Files/Api.js"
import {
  databaseRetryAfterSeconds,
  databaseUnavailable,
  databaseUnavailableMessage,
  logDatabaseUnavailable
} from "../Sql.js"
import { CurrentRequestId } from "./Middleware.js"

/** A response for errors of `schema`, with the status the schema declares. */
export const respond = <A, I>(schema: Schema.Schema<A, I>) => {
  const status = HttpApiSchema.getStatusErrorAST(schema.ast)
  const encode = Schema.encodeSync(schema)
  return (error: A, headers?: Record<string, string>) =>
    HttpServerResponse.unsafeJson(encode(error), { status, ...(headers ? { headers } : {}) })
}

const validationResponse = respond(ValidationError)
const internalErrorResponse = respond(InternalError)
const notFoundResponse = respond(NotFound)
const tooLargeResponse = respond(PayloadTooLarge)
const unavailableResponse = respond(ServiceUnavailable)

const tooLarge = (limitBytes: number, what = "Request body") =>
  tooLargeResponse(
    new PayloadTooLarge({ message: `${what} exceeds the limit of ${limitBytes} bytes`, limitBytes }),
    // The rest of the body is not read: the connection cannot be reused.
    { connection: "close" }
  )

const fromDecodeError = (error: HttpApiError.HttpApiDecodeError) =>
  validationResponse(
    new ValidationError({
      message: "The request does not match the expected schema",
      issues: oneIssuePerField(error.issues)
    })
  )

/** One issue per failing field: a value that matches none of several alternatives gets their messages together. */
const oneIssuePerField = (issues: HttpApiError.HttpApiDecodeError["issues"]) => {
  const byPath = new Map<string, { path: Array<string | number>; messages: Array<string> }>()
  for (const issue of issues) {
    const path = issue.path.map(pathSegment)
    const key = JSON.stringify(path)
    const entry = byPath.get(key) ?? { path, messages: [] }
    if (!entry.messages.includes(issue.message)) entry.messages.push(issue.message)
    byPath.set(key, entry)
  }
  return [...byPath.values()].map(({ messages, path }) => new FieldIssue({ path, message: messages.join("; or ") }))
}

const pathSegment = (segment: PropertyKey): string | number => typeof segment === "number" ? segment : String(segment)

// A body that failed to read surfaces as a defect carrying the platform's RequestError.
const bodyReadFailure = (cause: Cause.Cause<unknown>) =>
  Option.filter(
    Cause.dieOption(cause),
    (defect): defect is HttpServerError.RequestError =>
      HttpServerError.isServerError(defect) && defect._tag === "RequestError" && defect.reason === "Decode"
  )

const exceededLimit = (error: HttpServerError.RequestError) =>
  error.cause instanceof Error && error.cause.message === "maxBytes exceeded"

/** Whether some endpoint of the API declares this error, i.e. whether the API can encode it. */
const declaredErrors = (api: HttpApi.HttpApi<string, HttpApiGroup.HttpApiGroup.AnyWithProps>) =>
  Schema.is(
    Schema.Union(
      api.errorSchema,
      ...Object.values(api.groups).flatMap((group) => [
        group.errorSchema,
        ...Object.values(group.endpoints).map((endpoint) => endpoint.errorSchema)
      ])
    )
  )

/** The wait, in whole seconds, that a declared error carries, if any. */
const retryAfterOf = (error: unknown): number | null => {
  if (typeof error !== "object" || error === null) return null
  const { retryAfterMs, retryAfterSeconds } = error as { retryAfterMs?: unknown; retryAfterSeconds?: unknown }
  const seconds = typeof retryAfterSeconds === "number"
    ? retryAfterSeconds
    : typeof retryAfterMs === "number"
    ? retryAfterMs / 1000
    : null
  return seconds === null ? null : Math.max(1, Math.ceil(seconds))
}

/** A declared error, passed on to the API to encode; its wait, if it has one, as `Retry-After`. */
const passOn = <E>(error: unknown, cause: Cause.Cause<E>): Effect.Effect<never, E> => {
  const retryAfter = retryAfterOf(error)
  return retryAfter === null ? Effect.failCause(cause) : Effect.zipRight(
    HttpApp.appendPreResponseHandler((_request, response) =>
      Effect.succeed(HttpServerResponse.setHeader(response, "retry-after", String(retryAfter)))
    ),
    Effect.failCause(cause)
  )
}

const unexpected = (cause: Cause.Cause<unknown>) =>
  Effect.gen(function*() {
    const unreachable = databaseUnavailable(cause)
    if (Option.isSome(unreachable)) {
      yield* logDatabaseUnavailable(unreachable.value)
      return unavailableResponse(new ServiceUnavailable({ message: databaseUnavailableMessage }), {
        "retry-after": String(databaseRetryAfterSeconds)
      })
    }
    yield* Effect.logError("Unexpected failure", cause)
    const requestId = yield* FiberRef.get(CurrentRequestId)
    return internalErrorResponse(new InternalError({ message: "Internal server error", requestId }))
  })

export const ErrorModelLive = HttpApiBuilder.middleware(
  Effect.gen(function*() {
    const { files, importMaxSize, maxBodySize } = yield* AppConfig
    const uploadLimit = files.maxSize + uploadOverheadBytes
    const isUpload = (request: HttpServerRequest.HttpServerRequest) =>
      request.method === "POST" && request.url.split("?")[0] === uploadPath
    /** The body limit of a request that is not an upload: imports of whole chat histories get theirs. */
    const bodyLimitOf = (request: HttpServerRequest.HttpServerRequest) => {
      const path = request.url.split("?")[0]!
      return request.method === "POST" && (path === importPath || path.startsWith(`${importPath}/`))
        ? importMaxSize
        : maxBodySize
    }
    const { api } = yield* HttpApi.Api
    const isDeclaredError = declaredErrors(api)
    return (app) =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const declaredLength = Number(request.headers["content-length"] ?? 0)
        // The OpenAI-compatible routes answer in OpenAI's error format, an oversized body included.
        const ownErrors = request.url.startsWith(`${gatewayPrefix}/`)
        if (isUpload(request)) {
          if (declaredLength > uploadLimit) return tooLarge(files.maxSize, "The file")
          return yield* HttpIncomingMessage.withMaxBodySize(app, Option.some(uploadLimit))
        }
        const limit = bodyLimitOf(request)
        if (declaredLength > limit && !ownErrors) return tooLarge(limit)
        return yield* HttpIncomingMessage.withMaxBodySize(app, Option.some(limit))
      }).pipe(
        Effect.catchAllCause((cause) => {
          const failure = Cause.failureOption(cause)
          if (Option.isSome(failure)) {
            const error: unknown = failure.value
            if (error instanceof HttpApiError.HttpApiDecodeError) return Effect.succeed(fromDecodeError(error))
            if (HttpServerError.isServerError(error) && error._tag === "RouteNotFound") {
              const path = error.request.url.split("?")[0]
              return Effect.succeed(
                notFoundResponse(new NotFound({ message: `No route for ${error.request.method} ${path}` }))
              )
            }
            return isDeclaredError(error) ? passOn(error, cause) : unexpected(cause)
          }
          const bodyFailure = bodyReadFailure(cause)
          if (Option.isSome(bodyFailure)) {
            return Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
              exceededLimit(bodyFailure.value)
                ? isUpload(request) ? tooLarge(files.maxSize, "The file") : tooLarge(bodyLimitOf(request))
                : validationResponse(
                  new ValidationError({
                    message: "The request body is not valid JSON",
                    issues: [new FieldIssue({ path: ["body"], message: "Malformed JSON" })]
                  })
                ))
          }
          return Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : unexpected(cause)
        })
      )
  })
)
