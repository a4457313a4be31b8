/**
 * The general limit on requests per client address (`RATE_LIMIT_PER_ADDRESS`), in front of every
 * route: a request over it is answered 429 with `Retry-After` before it is routed, its body unread.
 * Health checks and metrics are left out (probes and scrapers poll them), as are the addresses of
 * `RATE_LIMIT_EXEMPT_ADDRESSES`. The gateway's routes answer in the error format of their dialect
 * (OpenAI's, or Anthropic's for `/v1/messages` and Anthropic's clients).
 */
import { HttpApiBuilder, HttpServerRequest } from "@effect/platform"
import { Effect, Either, Option } from "effect"
import { gatewayPrefix } from "../ApiBeside.js"
import { RateLimits } from "../Auth/RateLimits.js"
import { AppConfig } from "../Config.js"
import { RateLimited } from "../Domain/Errors.js"
import { gatewayErrorResponse } from "../Gateway/Http.js"
import { respond } from "./ErrorModel.js"

const rateLimitedResponse = respond(RateLimited)

/** Paths no limit applies to: what orchestrators and monitoring poll. */
const unlimited = (path: string) => path === "/metrics" || path === "/health" || path.startsWith("/health/")

export const AddressRateLimitLive = HttpApiBuilder.middleware(
  Effect.gen(function*() {
    const { apiRateLimit } = yield* AppConfig
    const rateLimits = yield* RateLimits
    return (app) =>
      Option.isNone(apiRateLimit.perAddress) ? app : Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const path = request.url.split("?")[0] ?? ""
        if (unlimited(path)) return yield* app
        const within = yield* Effect.either(rateLimits.addressRequest)
        if (Either.isRight(within)) return yield* app
        const error = within.left
        return path === gatewayPrefix || path.startsWith(`${gatewayPrefix}/`)
          ? gatewayErrorResponse(error, request)
          : rateLimitedResponse(error, { "retry-after": String(error.retryAfterSeconds) })
      })
  })
)
