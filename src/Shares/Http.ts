import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { WebPlusApi } from "../Api.js"
import { Shares } from "../Shares.js"

export const SharesHttpLive = HttpApiBuilder.group(
  WebPlusApi,
  "shares",
  (handlers) =>
    Effect.gen(function*() {
      const shares = yield* Shares
      return handlers
        .handle("createShare", ({ payload }) => shares.create(payload))
        .handle("listShares", ({ urlParams }) => shares.list(urlParams))
        .handle("shareStats", () => shares.stats)
        .handle("getShare", ({ path }) => shares.get(path.id))
        .handle("updateShare", ({ path, payload }) => shares.update(path.id, payload))
        .handle("revokeShare", ({ path }) => shares.revoke(path.id))
    })
)

export const PublicSharesHttpLive = HttpApiBuilder.group(
  WebPlusApi,
  "publicShares",
  (handlers) =>
    Effect.gen(function*() {
      const shares = yield* Shares
      return handlers
        .handle("viewShare", ({ path }) => shares.view(path.slug))
        .handle("reactToShare", ({ path, payload }) => shares.react(path.slug, payload.reaction))
    })
)
