/**
 * Serves the API: the groups' handlers, the error model, OpenAPI at
 * `/openapi.json`, the interactive reference at `/docs`, CORS and the
 * per-request middleware, on the Node HTTP server.
 */
import { type HttpApi, HttpApiBuilder, HttpApiScalar, HttpMiddleware } from "@effect/platform"
import { Effect, Layer } from "effect"
import { WebPlusApi } from "./Api.js"
import { AppConfig } from "./Config.js"
import { Health } from "./Health.js"
import { HealthHttpLive } from "./Health/Http.js"
import { ErrorModelLive } from "./Http/ErrorModel.js"
import { requestContext } from "./Http/Middleware.js"
import { HttpServerLive } from "./Http/Server.js"

export const docsPath = "/docs"
export const openApiPath = "/openapi.json"

const CorsLive = Layer.unwrapEffect(
  Effect.map(AppConfig, ({ corsOrigins }) =>
    corsOrigins.length === 0 ? Layer.empty : HttpApiBuilder.middlewareCors({
      allowedOrigins: corsOrigins.includes("*") ? () => true : corsOrigins,
      allowedHeaders: ["authorization", "content-type", "x-api-key", "x-request-id", "last-event-id"],
      exposedHeaders: ["x-request-id", "retry-after", "ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
      maxAge: 600
    }))
)

/**
 * Serves an API built by `apiLayer` (`HttpApiBuilder.api(…)` with its groups)
 * with everything every API of this server gets.
 */
export const serve = <E, R>(apiLayer: Layer.Layer<HttpApi.Api, E, R>) =>
  HttpApiBuilder.serve((app) => requestContext({ docsPath })(app).pipe(HttpMiddleware.withLoggerDisabled)).pipe(
    Layer.provide(HttpApiBuilder.middlewareOpenApi({ path: openApiPath })),
    Layer.provide(HttpApiScalar.layer({ path: docsPath, scalar: { withDefaultFonts: false } })),
    Layer.provide(ErrorModelLive),
    Layer.provide(CorsLive),
    Layer.provide(apiLayer),
    Layer.provideMerge(HttpServerLive)
  )

/** The handlers of every group of `WebPlusApi`. */
export const ApiGroupsLive = Layer.mergeAll(HealthHttpLive).pipe(Layer.provide(Health.Default))

export const ApiLive = HttpApiBuilder.api(WebPlusApi).pipe(Layer.provide(ApiGroupsLive))

export const HttpLive = serve(ApiLive)
