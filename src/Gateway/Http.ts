/**
 * The OpenAI-compatible routes under `/v1`, beside the REST API (which
 * answers errors in its own format): `GET /v1/models`,
 * `POST /v1/chat/completions` and `POST /v1/embeddings`, authenticated by an API key sent as
 * `Authorization: Bearer wp_…` (what OpenAI's clients send) or `X-API-Key`.
 * Every failure is answered in OpenAI's error body, so official clients
 * raise their usual error classes. Also the handlers of the REST API's
 * usage reports (per key, your own, every user's).
 */
import { HttpApiBuilder, HttpRouter, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Cause, Effect, FiberRef, Option, ParseResult, Redacted, Schema, Stream } from "effect"
import { WebPlusApi } from "../Api.js"
import { gatewayPrefix } from "../ApiBeside.js"
import { Auth, credentialIn } from "../Auth.js"
import { RateLimits } from "../Auth/RateLimits.js"
import { apiKeyPrefix } from "../Auth/Tokens.js"
import { AppConfig } from "../Config.js"
import { CurrentActor } from "../Domain/Actor.js"
import { PayloadTooLarge, Unauthorized } from "../Domain/Errors.js"
import { type EmbeddingFailure, Gateway } from "../Gateway.js"
import { CurrentRequestId } from "../Http/Middleware.js"
import {
  databaseRetryAfterSeconds,
  databaseUnavailable,
  databaseUnavailableMessage,
  logDatabaseUnavailable
} from "../Sql.js"
import {
  ChatCompletion,
  ChatCompletionChunk,
  ChatCompletionRequest,
  EmbeddingList,
  EmbeddingRequest,
  ErrorBody,
  GatewayModel,
  InvalidRequest,
  ModelList
} from "./Schemas.js"

type Failure = EmbeddingFailure | Unauthorized | PayloadTooLarge

interface OpenAiError {
  readonly status: number
  readonly message: string
  readonly type: string
  readonly param: string | null
  readonly code: string | null
  /** When the provider said how long to wait (its `Retry-After`, or the gateway's circuit for it). */
  readonly retryAfterMs?: number | undefined
}

/** OpenAI's status, type and code for each failure; messages never carry credentials or upstream bodies. */
const describe = (failure: Failure): OpenAiError => {
  switch (failure._tag) {
    case "InvalidRequest":
      return { status: 400, message: failure.message, type: "invalid_request_error", param: failure.param, code: null }
    case "EmbeddingsUnsupported":
      return { status: 400, message: failure.message, type: "invalid_request_error", param: failure.param, code: null }
    case "UnknownModel":
      return {
        status: 404,
        message: `The model '${failure.model}' does not exist or you do not have access to it.`,
        type: "invalid_request_error",
        param: "model",
        code: "model_not_found"
      }
    case "Unauthorized":
      return {
        status: 401,
        message: failure.message,
        type: "invalid_request_error",
        param: null,
        code: "invalid_api_key"
      }
    case "Forbidden":
      return {
        status: 403,
        message: failure.message,
        type: "permission_error",
        param: null,
        code: "insufficient_permissions"
      }
    case "RateLimited":
      return {
        status: 429,
        message: failure.message,
        type: "requests",
        param: null,
        code: "rate_limit_exceeded",
        retryAfterMs: failure.retryAfterSeconds * 1000
      }
    case "PayloadTooLarge":
      return {
        status: 413,
        message: failure.message,
        type: "invalid_request_error",
        param: null,
        code: "request_too_large"
      }
    case "ProviderUnreachable":
      return { status: 503, message: failure.message, type: "api_error", param: null, code: "provider_unreachable" }
    case "ProviderTimeout":
      return { status: 504, message: failure.message, type: "api_error", param: null, code: "provider_timeout" }
    case "ProviderError":
      return {
        status: 502,
        message: failure.message,
        type: "api_error",
        param: null,
        code: "provider_error",
        retryAfterMs: failure.retryAfterMs
      }
    case "ProviderUnavailable":
      return {
        status: 503,
        message: failure.message,
        type: "api_error",
        param: null,
        code: "provider_unavailable",
        retryAfterMs: failure.retryAfterMs
      }
  }
}

const encodeErrorBody = Schema.encodeSync(ErrorBody)

const errorBody = ({ code, message, param, type }: OpenAiError) =>
  encodeErrorBody({ error: { message, type, param, code } })

/** A failure, as OpenAI's clients expect it. */
export const gatewayErrorResponse = (failure: Failure) => errorResponse(describe(failure))

const errorResponse = (error: OpenAiError) =>
  HttpServerResponse.unsafeJson(errorBody(error), {
    status: error.status,
    headers: {
      // RFC 6750: a 401 tells the client which scheme to use.
      ...(error.status === 401 ? { "www-authenticate": "Bearer realm=\"webplus\"" } : {}),
      // OpenAI's clients wait this long before they retry.
      ...(error.retryAfterMs !== undefined
        ? { "retry-after": String(Math.ceil(error.retryAfterMs / 1000)), "retry-after-ms": String(error.retryAfterMs) }
        : {})
    }
  })

/** A defect: logged with its cause, answered with the request id to quote and nothing else. */
const internalError = (cause: Cause.Cause<unknown>): Effect.Effect<OpenAiError> =>
  Effect.gen(function*() {
    const unreachable = databaseUnavailable(cause)
    if (Option.isSome(unreachable)) {
      yield* logDatabaseUnavailable(unreachable.value)
      return {
        status: 503,
        message: databaseUnavailableMessage,
        type: "api_error",
        param: null,
        code: "service_unavailable",
        retryAfterMs: databaseRetryAfterSeconds * 1000
      } satisfies OpenAiError
    }
    yield* Effect.logError("Unexpected failure in the gateway", cause)
    const requestId = yield* FiberRef.get(CurrentRequestId)
    return {
      status: 500,
      message: `Internal server error (request id ${requestId})`,
      type: "api_error",
      param: null,
      code: null
    } satisfies OpenAiError
  })

/** Every outcome of a gateway route as a response; only an interruption (the client left) passes through. */
const answer = <R>(handler: Effect.Effect<HttpServerResponse.HttpServerResponse, Failure, R>) =>
  handler.pipe(
    Effect.catchAll((failure) => Effect.succeed(errorResponse(describe(failure)))),
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause) ? Effect.failCause(cause) : Effect.map(internalError(cause), errorResponse)
    )
  )

/** `a.b[0].c`, the way OpenAI names a field in `param`. */
const paramOf = (path: ReadonlyArray<PropertyKey>): string | null =>
  path.length === 0
    ? null
    : path.reduce<string>(
      (param, segment) =>
        typeof segment === "number"
          ? `${param}[${segment}]`
          : param === ""
          ? String(segment)
          : `${param}.${String(segment)}`,
      ""
    )

/** A request body decoded with `schema`; the first problem is answered, naming its field. */
const decodeBody = <A, I>(schema: Schema.Schema<A, I>) => (body: unknown): Effect.Effect<A, InvalidRequest> =>
  Schema.decodeUnknown(schema, { errors: "first", onExcessProperty: "ignore" })(body).pipe(
    Effect.mapError((error) => {
      const issue = ParseResult.ArrayFormatter.formatErrorSync(error)[0]
      const param = issue ? paramOf(issue.path) : null
      return new InvalidRequest({
        message: param === null
          ? `Invalid request body: ${issue?.message ?? "expected a JSON object"}`
          : issue?._tag === "Missing"
          ? `Missing required parameter: '${param}'.`
          : `Invalid value for '${param}': ${issue?.message ?? "not accepted"}`,
        param
      })
    })
  )

const decodeCompletionRequest = decodeBody(ChatCompletionRequest)
const decodeEmbeddingRequest = decodeBody(EmbeddingRequest)

const encodeChunk = Schema.encodeSync(Schema.parseJson(ChatCompletionChunk))
const encodeCompletion = Schema.encodeSync(ChatCompletion)
const encodeModelList = Schema.encodeSync(ModelList)
const encodeModel = Schema.encodeSync(GatewayModel)
const encodeEmbeddings = Schema.encodeSync(EmbeddingList)

/** Server-sent events as OpenAI sends them; a failure after the first event is the last event, without `[DONE]`. */
const toEventStream = (chunks: Stream.Stream<ChatCompletionChunk, Failure>) =>
  chunks.pipe(
    Stream.map((chunk) => `data: ${encodeChunk(chunk)}\n\n`),
    Stream.concat(Stream.make("data: [DONE]\n\n")),
    Stream.catchAllCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Stream.failCause(cause)
      const failure = Cause.failureOption(cause)
      const error: Effect.Effect<OpenAiError> = Option.isSome(failure)
        ? Effect.succeed(describe(failure.value))
        : internalError(cause)
      return Stream.fromEffect(Effect.map(error, (error) => `data: ${JSON.stringify(errorBody(error))}\n\n`))
    }),
    Stream.encodeText
  )

/** Reads a request's body within `MAX_BODY_SIZE`, as JSON. */
const readJson = (
  limitBytes: number
): Effect.Effect<unknown, PayloadTooLarge | InvalidRequest, HttpServerRequest.HttpServerRequest> =>
  // Read within the limit the error model sets on every request (`withMaxBodySize`): a body over it
  // fails as it is read, whether its length was declared or it came in chunks.
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
    request.json.pipe(
      Effect.mapError((error): PayloadTooLarge | InvalidRequest =>
        error.reason === "Decode" && error.cause instanceof Error && error.cause.message === "maxBytes exceeded"
          ? new PayloadTooLarge({ message: `Request body exceeds the limit of ${limitBytes} bytes`, limitBytes })
          : new InvalidRequest({
            message: "We could not parse the JSON body of your request: it is not valid JSON.",
            param: null
          })
      )
    ))

export const GatewayRoutesLive = HttpApiBuilder.Router.use((router) =>
  Effect.gen(function*() {
    const gateway = yield* Gateway
    const auth = yield* Auth
    const rateLimits = yield* RateLimits
    const { maxBodySize } = yield* AppConfig

    /**
     * API keys only: usage is counted per key, and a signed-in person chats
     * through the REST API. A key's scopes apply (`models:read` to list,
     * `models:use` to complete).
     */
    const authenticate = Effect.gen(function*() {
      const credential = credentialIn((yield* HttpServerRequest.HttpServerRequest).headers)
      if (credential === undefined || credential.length === 0) {
        return yield* new Unauthorized({
          message: "You didn't provide an API key. Send it as 'Authorization: Bearer wp_…'."
        })
      }
      if (!credential.startsWith(apiKeyPrefix)) {
        return yield* new Unauthorized({ message: "This endpoint accepts API keys (wp_…) only." })
      }
      const actor = yield* auth.authenticate(Redacted.make(credential))
      // The general per-user limit (`RATE_LIMIT_PER_USER`), as for every authenticated request.
      yield* rateLimits.userRequest(actor)
      return actor
    })

    const asCaller = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
      Effect.flatMap(authenticate, (actor) => Effect.provideService(effect, CurrentActor, actor))

    yield* router.get(
      `${gatewayPrefix}/models`,
      answer(asCaller(Effect.map(gateway.listModels, (list) => HttpServerResponse.unsafeJson(encodeModelList(list)))))
    )

    // Model ids may contain slashes (`<provider>/<model>`): the rest of the path is the id.
    yield* router.get(
      `${gatewayPrefix}/models/*`,
      answer(asCaller(
        Effect.flatMap(HttpRouter.params, (params) =>
          Effect.map(
            gateway.retrieveModel(params["*"] ?? ""),
            (model) => HttpServerResponse.unsafeJson(encodeModel(model))
          ))
      ))
    )

    yield* router.post(
      `${gatewayPrefix}/chat/completions`,
      answer(asCaller(
        Effect.gen(function*() {
          const body = yield* Effect.flatMap(readJson(maxBodySize), decodeCompletionRequest)
          if (body.stream !== true) {
            return HttpServerResponse.unsafeJson(encodeCompletion(yield* gateway.complete(body)))
          }
          // The upstream call lives in the request's scope, which closes once the body is written
          // or the client goes away (the server then interrupts this fiber).
          const chunks = yield* gateway.stream(body)
          return HttpServerResponse.stream(toEventStream(chunks), {
            contentType: "text/event-stream",
            headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
          })
        })
      ))
    )

    yield* router.post(
      `${gatewayPrefix}/embeddings`,
      answer(asCaller(
        Effect.flatMap(
          Effect.flatMap(readJson(maxBodySize), decodeEmbeddingRequest),
          (body) => Effect.map(gateway.embed(body), (list) => HttpServerResponse.unsafeJson(encodeEmbeddings(list)))
        )
      ))
    )

    // Unknown paths under /v1 answer in OpenAI's format too, as its clients expect.
    yield* router.all(
      `${gatewayPrefix}/*`,
      Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
        errorResponse({
          status: 404,
          message: `Invalid URL (${request.method} ${request.url.split("?")[0]})`,
          type: "invalid_request_error",
          param: null,
          code: null
        }))
    )
  })
)

/** The handler of the REST API's usage endpoint. */
export const UsageHttpLive = HttpApiBuilder.group(WebPlusApi, "usage", (handlers) =>
  Effect.gen(function*() {
    const gateway = yield* Gateway
    return handlers
      .handle("apiKeyUsage", ({ path }) => gateway.keyUsage(path.id))
      .handle("myUsage", ({ urlParams }) => gateway.myUsage(urlParams))
      .handle("myBudget", () => gateway.myBudget)
      .handle("usageReport", ({ urlParams }) => gateway.usageReport(urlParams))
  }))
