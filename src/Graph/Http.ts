import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { WebPlusApi } from "../Api.js"
import { Graph } from "../Graph.js"

export const GraphHttpLive = HttpApiBuilder.group(
  WebPlusApi,
  "graph",
  (handlers) =>
    Effect.gen(function*() {
      const graph = yield* Graph
      return handlers
        .handle("requestExtraction", ({ payload }) => graph.requestExtraction(payload))
        .handle("listExtractions", ({ urlParams }) => graph.listExtractions(urlParams))
        .handle("getExtraction", ({ path }) => graph.getExtraction(path.id))
        .handle("searchEntities", ({ urlParams }) => graph.searchEntities(urlParams))
        .handle("similarEntities", ({ urlParams }) => graph.similarEntities(urlParams))
        .handle("getEntity", ({ path }) => graph.getEntity(path.id))
        .handle("deleteEntity", ({ path }) => graph.deleteEntity(path.id))
    })
)
