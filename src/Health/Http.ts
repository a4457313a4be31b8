import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { WebPlusApi } from "../Api.js"
import { Health } from "../Health.js"

export const HealthHttpLive = HttpApiBuilder.group(WebPlusApi, "health", (handlers) =>
  Effect.gen(function*() {
    const health = yield* Health
    return handlers
      .handle("live", () => health.live)
      .handle("ready", () => health.ready)
      .handle("metrics", ({ headers }) => health.metrics(headers.authorization))
  }))
