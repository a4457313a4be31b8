import { HttpApiBuilder, HttpServerRequest } from "@effect/platform"
import { Effect } from "effect"
import { WebPlusApi } from "../Api.js"
import { Oidc } from "../Oidc.js"

export const OidcHttpLive = HttpApiBuilder.group(WebPlusApi, "oidc", (handlers) =>
  Effect.gen(function*() {
    const oidc = yield* Oidc
    return handlers
      .handle("info", () => oidc.info)
      .handle("login", ({ urlParams }) => oidc.login(urlParams))
      .handle("callback", ({ urlParams }) =>
        Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
          oidc.callback(urlParams, request.cookies)))
      .handle("token", ({ payload }) =>
        oidc.exchange(payload.code))
  }))
