/**
 * The gateway's routes under `/v1`, beside the REST API (which answers errors
 * in its own format): OpenAI's `GET /v1/models`, `POST /v1/chat/completions`
 * and `POST /v1/embeddings`, and Anthropic's `POST /v1/messages` and
 * `POST /v1/messages/count_tokens` (and its format of `GET /v1/models`, for its
 * clients), authenticated by an API key sent as `Authorization: Bearer wp_…`
 * (what OpenAI's clients send) or `X-API-Key` (what Anthropic's send). Every
 * failure is described once (`describe`) and answered in the error body of
 * the route's dialect, so official clients raise their usual error classes.
 * Also the handlers of the REST API's usage reports (per key, your own,
 * every user's).
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
  CountTokensRequest,
  Message,
  MessagesErrorBody,
  MessagesRequest,
  MessageStreamEvent,
  MessageTokensCount,
  ModelInfo,
  ModelInfoPage,
  ModelInfoQuery
} from "./MessagesSchemas.js"
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

/** A failure as the gateway answers it, whatever the dialect. */
interface GatewayError {
  readonly status: number
  /** Never credentials or upstream bodies. */
  readonly message: string
  /** The request field at fault. */
  readonly param: string | null
  /** What went wrong, as OpenAI's `code` says it (`model_not_found`, `provider_unavailable`…). */
  readonly code: string | null
  /** When the provider said how long to wait (its `Retry-After`, or the gateway's circuit for it). */
  readonly retryAfterMs?: number | undefined
}

/** The status and code of each failure: one table, which each dialect renders in its own body. */
const describe = (failure: Failure): GatewayError => {
  switch (failure._tag) {
    case "InvalidRequest":
    case "EmbeddingsUnsupported":
      return { status: 400, message: failure.message, param: failure.param, code: null }
    case "UnknownModel":
      return {
        status: 404,
        message: `The model '${failure.model}' does not exist or you do not have access to it.`,
        param: "model",
        code: "model_not_found"
      }
    case "Unauthorized":
      return { status: 401, message: failure.message, param: null, code: "invalid_api_key" }
    case "Forbidden":
      return { status: 403, message: failure.message, param: null, code: "insufficient_permissions" }
    case "RateLimited":
      return {
        status: 429,
        message: failure.message,
        param: null,
        code: "rate_limit_exceeded",
        retryAfterMs: failure.retryAfterSeconds * 1000
      }
    case "PayloadTooLarge":
      return { status: 413, message: failure.message, param: null, code: "request_too_large" }
    case "ProviderUnreachable":
      return { status: 503, message: failure.message, param: null, code: "provider_unreachable" }
    case "ProviderTimeout":
      return { status: 504, message: failure.message, param: null, code: "provider_timeout" }
    case "ProviderError":
      return {
        status: 502,
        message: failure.message,
        param: null,
        code: "provider_error",
        retryAfterMs: failure.retryAfterMs
      }
    case "ProviderUnavailable":
      return {
        status: 503,
        message: failure.message,
        param: null,
        code: "provider_unavailable",
        retryAfterMs: failure.retryAfterMs
      }
  }
}

/** How a dialect writes a failure: as a response's body, and as the last event of a stream. */
interface Dialect {
  readonly body: (error: GatewayError) => unknown
  readonly event: (error: GatewayError) => string
  /** How to send the key, for a request without one. */
  readonly keyHint: string
}

const encodeErrorBody = Schema.encodeSync(ErrorBody)

/** OpenAI's error type for a status. */
const openAiType = (status: number) =>
  status === 403
    ? "permission_error"
    : status === 429
    ? "requests"
    : status >= 500
    ? "api_error"
    : "invalid_request_error"

const openAi: Dialect = {
  body: ({ code, message, param, status }) =>
    encodeErrorBody({ error: { message, type: openAiType(status), param, code } }),
  event: (error) => `data: ${JSON.stringify(openAi.body(error))}\n\n`,
  keyHint: "Authorization: Bearer wp_…"
}

const encodeMessagesErrorBody = Schema.encodeSync(MessagesErrorBody)

/** Anthropic's error types by status, as Anthropic documents them. */
const anthropicTypes: Readonly<Record<number, string>> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
  429: "rate_limit_error"
}

/** Anthropic's error type for a failure: by its status; a provider whose circuit is open is `overloaded_error`. */
const anthropicType = ({ code, status }: GatewayError) =>
  code === "provider_unavailable"
    ? "overloaded_error"
    : anthropicTypes[status] ?? (status >= 500 ? "api_error" : "invalid_request_error")

const anthropic: Dialect = {
  body: (error) =>
    encodeMessagesErrorBody({ type: "error", error: { type: anthropicType(error), message: error.message } }),
  event: (error) => `event: error\ndata: ${JSON.stringify(anthropic.body(error))}\n\n`,
  keyHint: "x-api-key: wp_…"
}

/** The path of Anthropic's Messages API. */
const messagesPath = `${gatewayPrefix}/messages`

/** Anthropic's dialect for its route, and for any request an Anthropic client sends (it says `anthropic-version`). */
const dialectOf = (request: HttpServerRequest.HttpServerRequest): Dialect => {
  const path = request.url.split("?")[0] ?? ""
  return path === messagesPath || path.startsWith(`${messagesPath}/`) ||
      request.headers["anthropic-version"] !== undefined
    ? anthropic
    : openAi
}

/** A failure on a path of the gateway, in the error format of the client that sent `request`. */
export const gatewayErrorResponse = (failure: Failure, request: HttpServerRequest.HttpServerRequest) =>
  errorResponse(dialectOf(request), describe(failure))

const errorResponse = (dialect: Dialect, error: GatewayError) =>
  HttpServerResponse.unsafeJson(dialect.body(error), {
    status: error.status,
    headers: {
      // RFC 6750: a 401 tells the client which scheme to use.
      ...(error.status === 401 ? { "www-authenticate": "Bearer realm=\"webplus\"" } : {}),
      // OpenAI's and Anthropic's clients wait this long before they retry.
      ...(error.retryAfterMs !== undefined
        ? { "retry-after": String(Math.ceil(error.retryAfterMs / 1000)), "retry-after-ms": String(error.retryAfterMs) }
        : {})
    }
  })

/** A defect: logged with its cause, answered with the request id to quote and nothing else. */
const internalError = (cause: Cause.Cause<unknown>): Effect.Effect<GatewayError> =>
  Effect.gen(function*() {
    const unreachable = databaseUnavailable(cause)
    if (Option.isSome(unreachable)) {
      yield* logDatabaseUnavailable(unreachable.value)
      return {
        status: 503,
        message: databaseUnavailableMessage,
        param: null,
        code: "service_unavailable",
        retryAfterMs: databaseRetryAfterSeconds * 1000
      } satisfies GatewayError
    }
    yield* Effect.logError("Unexpected failure in the gateway", cause)
    const requestId = yield* FiberRef.get(CurrentRequestId)
    return {
      status: 500,
      message: `Internal server error (request id ${requestId})`,
      param: null,
      code: null
    } satisfies GatewayError
  })

/** Every outcome of a gateway route as a response in `dialect`; only an interruption (the client left) passes through. */
const answer = (dialect: Dialect) => <R>(handler: Effect.Effect<HttpServerResponse.HttpServerResponse, Failure, R>) =>
  handler.pipe(
    Effect.catchAll((failure) => Effect.succeed(errorResponse(dialect, describe(failure)))),
    Effect.catchAllCause((cause) =>
      Cause.isInterruptedOnly(cause)
        ? Effect.failCause(cause)
        : Effect.map(internalError(cause), (error) => errorResponse(dialect, error))
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

/** A request's body (or query) decoded with `schema`; the first problem is answered, naming its field. */
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
const decodeMessagesRequest = decodeBody(MessagesRequest)
const decodeCountTokensRequest = decodeBody(CountTokensRequest)
const decodeModelInfoQuery = decodeBody(ModelInfoQuery)

const encodeChunk = Schema.encodeSync(Schema.parseJson(ChatCompletionChunk))
const encodeCompletion = Schema.encodeSync(ChatCompletion)
const encodeModelList = Schema.encodeSync(ModelList)
const encodeModel = Schema.encodeSync(GatewayModel)
const encodeEmbeddings = Schema.encodeSync(EmbeddingList)
const encodeMessage = Schema.encodeSync(Message)
const encodeMessageEvent = Schema.encodeSync(Schema.parseJson(MessageStreamEvent))
const encodeTokensCount = Schema.encodeSync(MessageTokensCount)
const encodeModelInfoPage = Schema.encodeSync(ModelInfoPage)
const encodeModelInfo = Schema.encodeSync(ModelInfo)

/** Server-sent events, written by `dialect`; a failure after the first event is the last event, as `dialect` writes it. */
const toEventStream = (dialect: Dialect, events: Stream.Stream<string, Failure>) =>
  events.pipe(
    Stream.catchAllCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Stream.failCause(cause)
      const failure = Cause.failureOption(cause)
      const error: Effect.Effect<GatewayError> = Option.isSome(failure)
        ? Effect.succeed(describe(failure.value))
        : internalError(cause)
      return Stream.fromEffect(Effect.map(error, dialect.event))
    }),
    Stream.encodeText
  )

/** OpenAI's events: each chunk as `data:`, then `data: [DONE]` (left out after a failure). */
const completionEvents = (chunks: Stream.Stream<ChatCompletionChunk, Failure>) =>
  toEventStream(
    openAi,
    chunks.pipe(
      Stream.map((chunk) => `data: ${encodeChunk(chunk)}\n\n`),
      Stream.concat(Stream.make("data: [DONE]\n\n"))
    )
  )

/** Anthropic's events: each named by its type. */
const messageEventStream = (events: Stream.Stream<MessageStreamEvent, Failure>) =>
  toEventStream(
    anthropic,
    Stream.map(events, (event) => `event: ${event.type}\ndata: ${encodeMessageEvent(event)}\n\n`)
  )

const eventStreamHeaders = {
  contentType: "text/event-stream",
  headers: { "cache-control": "no-cache", "x-accel-buffering": "no" }
} as const

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
    const authenticate = (dialect: Dialect) =>
      Effect.gen(function*() {
        const credential = credentialIn((yield* HttpServerRequest.HttpServerRequest).headers)
        if (credential === undefined || credential.length === 0) {
          return yield* new Unauthorized({
            message: `You didn't provide an API key. Send it as '${dialect.keyHint}'.`
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

    /** `effect` for the caller the key names; every outcome answered in `dialect`. */
    const asCaller = (dialect: Dialect) =>
    <R>(
      effect: Effect.Effect<HttpServerResponse.HttpServerResponse, Failure, R>
    ) =>
      answer(dialect)(
        Effect.flatMap(authenticate(dialect), (actor) => Effect.provideService(effect, CurrentActor, actor))
      )
    const asOpenAiCaller = asCaller(openAi)

    /** A route both APIs have: answered as the client's API does (`dialectOf`), by that API's handler. */
    const eitherDialect = <R>(handlers: {
      readonly openAi: Effect.Effect<HttpServerResponse.HttpServerResponse, Failure, R>
      readonly anthropic: Effect.Effect<HttpServerResponse.HttpServerResponse, Failure, R>
    }) =>
      Effect.flatMap(
        HttpServerRequest.HttpServerRequest,
        (request) =>
          dialectOf(request) === anthropic
            ? asCaller(anthropic)(handlers.anthropic)
            : asOpenAiCaller(handlers.openAi)
      )

    yield* router.get(
      `${gatewayPrefix}/models`,
      eitherDialect({
        openAi: Effect.map(gateway.listModels, (list) => HttpServerResponse.unsafeJson(encodeModelList(list))),
        anthropic: HttpServerRequest.ParsedSearchParams.pipe(
          Effect.flatMap(decodeModelInfoQuery),
          Effect.flatMap(gateway.listModelInfos),
          Effect.map((page) => HttpServerResponse.unsafeJson(encodeModelInfoPage(page)))
        )
      })
    )

    // Model ids may contain slashes (`<provider>/<model>`): the rest of the path is the id.
    const modelName = Effect.map(HttpRouter.params, (params) => params["*"] ?? "")
    yield* router.get(
      `${gatewayPrefix}/models/*`,
      eitherDialect({
        openAi: modelName.pipe(
          Effect.flatMap(gateway.retrieveModel),
          Effect.map((model) => HttpServerResponse.unsafeJson(encodeModel(model)))
        ),
        anthropic: modelName.pipe(
          Effect.flatMap(gateway.retrieveModelInfo),
          Effect.map((model) => HttpServerResponse.unsafeJson(encodeModelInfo(model)))
        )
      })
    )

    yield* router.post(
      `${gatewayPrefix}/chat/completions`,
      asOpenAiCaller(
        Effect.gen(function*() {
          const body = yield* Effect.flatMap(readJson(maxBodySize), decodeCompletionRequest)
          if (body.stream !== true) {
            return HttpServerResponse.unsafeJson(encodeCompletion(yield* gateway.complete(body)))
          }
          // The upstream call lives in the request's scope, which closes once the body is written
          // or the client goes away (the server then interrupts this fiber).
          const chunks = yield* gateway.stream(body)
          return HttpServerResponse.stream(completionEvents(chunks), eventStreamHeaders)
        })
      )
    )

    yield* router.post(
      `${gatewayPrefix}/embeddings`,
      asOpenAiCaller(
        Effect.flatMap(
          Effect.flatMap(readJson(maxBodySize), decodeEmbeddingRequest),
          (body) => Effect.map(gateway.embed(body), (list) => HttpServerResponse.unsafeJson(encodeEmbeddings(list)))
        )
      )
    )

    // Anthropic's Messages API: the same checks, limits and usage as chat completions, in Anthropic's format.
    yield* router.post(
      messagesPath,
      asCaller(anthropic)(
        Effect.gen(function*() {
          const body = yield* Effect.flatMap(readJson(maxBodySize), decodeMessagesRequest)
          if (body.stream !== true) {
            return HttpServerResponse.unsafeJson(encodeMessage(yield* gateway.createMessage(body)))
          }
          // In the request's scope, as for chat completions.
          const events = yield* gateway.streamMessage(body)
          return HttpServerResponse.stream(messageEventStream(events), eventStreamHeaders)
        })
      )
    )

    // What a message request's prompt costs: the same checks as a message, without the limits on answers.
    yield* router.post(
      `${messagesPath}/count_tokens`,
      asCaller(anthropic)(
        readJson(maxBodySize).pipe(
          Effect.flatMap(decodeCountTokensRequest),
          Effect.flatMap(gateway.countTokens),
          Effect.map((count) => HttpServerResponse.unsafeJson(encodeTokensCount(count)))
        )
      )
    )

    // Unknown paths under /v1 answer in the client's format too (Anthropic's for its clients), as they expect.
    yield* router.all(
      `${gatewayPrefix}/*`,
      Effect.map(HttpServerRequest.HttpServerRequest, (request) =>
        errorResponse(dialectOf(request), {
          status: 404,
          message: `Invalid URL (${request.method} ${request.url.split("?")[0]})`,
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
