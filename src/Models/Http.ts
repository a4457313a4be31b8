import { HttpApiBuilder } from "@effect/platform"
import { Effect, Layer } from "effect"
import { WebPlusApi } from "../Api.js"
import { ModelRegistry } from "../Models.js"
import { eventsRoute } from "./Events.js"

export const ProvidersHttpLive = HttpApiBuilder.group(WebPlusApi, "providers", (handlers) =>
  Effect.gen(function*() {
    const registry = yield* ModelRegistry
    return handlers
      .handle("createProvider", ({ payload }) => registry.createProvider(payload))
      .handle("listProviders", () => registry.listProviders)
      .handle("getProvider", ({ path }) => registry.getProvider(path.id))
      .handle("updateProvider", ({ path, payload }) => registry.updateProvider(path.id, payload))
      .handle("deleteProvider", ({ path }) => registry.deleteProvider(path.id))
      .handle("providerHealth", ({ path }) => registry.health(path.id))
      .handle("syncProvider", ({ path }) => registry.sync(path.id))
      .handle("pullModel", ({ path, payload }) => registry.pull(path.id, payload.name))
  }))

export const ModelsHttpLive = HttpApiBuilder.group(WebPlusApi, "models", (handlers) =>
  Effect.gen(function*() {
    const registry = yield* ModelRegistry
    return handlers
      .handle("listModels", ({ urlParams }) => registry.listModels(urlParams))
      .handle("getModel", ({ path }) => registry.getModel(path.id))
      .handle("createModel", ({ payload }) => registry.createModel(payload))
      .handle("updateModel", ({ path, payload }) => registry.updateModel(path.id, payload))
      .handle("deleteModel", ({ path }) => registry.deleteModel(path.id))
      .handle("startModel", ({ path }) => registry.start(path.id))
      .handle("stopModel", ({ path }) => registry.stop(path.id))
  }))

export const ModelConfigsHttpLive = HttpApiBuilder.group(
  WebPlusApi,
  "modelConfigs",
  (handlers) =>
    Effect.gen(function*() {
      const registry = yield* ModelRegistry
      return handlers
        .handle("listModelConfigs", () => registry.listConfigs)
        .handle("createModelConfig", ({ payload }) => registry.createConfig(payload))
        .handle("getModelConfig", ({ path }) => registry.getConfig(path.id))
        .handle("updateModelConfig", ({ path, payload }) => registry.updateConfig(path.id, payload))
        .handle("deleteModelConfig", ({ path }) => registry.deleteConfig(path.id))
    })
)

/** `/api/v1/events`, beside the API (HttpApi does not describe WebSockets). */
export const EventsHttpLive = Layer.unwrapEffect(
  Effect.map(ModelRegistry, (registry) => eventsRoute(registry.snapshot))
)

export const ModelsApiLive = Layer.mergeAll(
  ProvidersHttpLive,
  ModelsHttpLive,
  ModelConfigsHttpLive,
  EventsHttpLive
)
