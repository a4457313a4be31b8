import { HttpApiBuilder, HttpApp, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Layer, Redacted } from "effect"
import { WebPlusApi } from "../Api.js"
import { Auth, credentialIn } from "../Auth.js"
import type { Actor } from "../Domain/Actor.js"
import { Authentication } from "./Api.js"
import { RateLimits } from "./RateLimits.js"

/** RFC 6750: a 401 tells the client which scheme to use. */
const challenge = HttpApp.appendPreResponseHandler((_request, response) =>
  Effect.succeed(
    response.status === 401
      ? HttpServerResponse.setHeader(response, "www-authenticate", "Bearer realm=\"webplus\"")
      : response
  )
)

/**
 * Who is calling, held to the general per-user limit (`RATE_LIMIT_PER_USER`) once known. A request
 * over it is refused before its handler runs.
 */
export const AuthenticationLive = Layer.effect(
  Authentication,
  Effect.gen(function*() {
    const auth = yield* Auth
    const rateLimits = yield* RateLimits
    const withinLimit = (actor: Actor) => Effect.as(rateLimits.userRequest(actor), actor)
    return {
      bearer: (token) => Effect.flatMap(auth.authenticate(token), withinLimit),
      // Tried after `bearer` fails: with no X-API-Key, answer with the bearer credential's own failure
      // (a limit already exceeded takes nothing more from it).
      apiKey: (key) =>
        (Redacted.value(key).length > 0
          ? auth.authenticate(key)
          : Effect.flatMap(
            HttpServerRequest.HttpServerRequest,
            (request) => auth.authenticate(Redacted.make(credentialIn(request.headers) ?? ""))
          )).pipe(Effect.tapError(() => challenge), Effect.flatMap(withinLimit))
    }
  })
)

export const AuthHttpLive = HttpApiBuilder.group(WebPlusApi, "auth", (handlers) =>
  Effect.gen(function*() {
    const auth = yield* Auth
    return handlers
      .handle("register", ({ payload }) => auth.register(payload))
      .handle("login", ({ payload }) => auth.login(payload))
      .handle("refresh", ({ payload }) => auth.refresh(payload.refreshToken))
      .handle("logout", () => auth.logout)
      .handle("me", () => auth.currentUser)
      .handle("changePassword", ({ payload }) => auth.changePassword(payload))
      .handle("createApiKey", ({ payload }) => auth.createApiKey(payload))
      .handle("listApiKeys", () => auth.listApiKeys)
      .handle("revokeApiKey", ({ path }) => auth.revokeApiKey(path.id))
  }))
