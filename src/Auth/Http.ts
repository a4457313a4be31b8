import { HttpApiBuilder, HttpApp, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { Effect, Layer, Redacted } from "effect"
import { WebPlusApi } from "../Api.js"
import { Auth, credentialIn } from "../Auth.js"
import { Authentication } from "./Api.js"

/** RFC 6750: a 401 tells the client which scheme to use. */
const challenge = HttpApp.appendPreResponseHandler((_request, response) =>
  Effect.succeed(
    response.status === 401
      ? HttpServerResponse.setHeader(response, "www-authenticate", "Bearer realm=\"webplus\"")
      : response
  )
)

export const AuthenticationLive = Layer.effect(
  Authentication,
  Effect.gen(function*() {
    const auth = yield* Auth
    return {
      bearer: (token) => auth.authenticate(token),
      // Tried after `bearer` fails: with no X-API-Key, answer with the bearer credential's own failure.
      apiKey: (key) =>
        (Redacted.value(key).length > 0
          ? auth.authenticate(key)
          : Effect.flatMap(
            HttpServerRequest.HttpServerRequest,
            (request) => auth.authenticate(Redacted.make(credentialIn(request.headers) ?? ""))
          )).pipe(Effect.tapError(() => challenge))
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
