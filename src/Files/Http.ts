import { HttpApiBuilder } from "@effect/platform"
import { Effect } from "effect"
import { WebPlusApi } from "../Api.js"
import { Files } from "../Files.js"

export const FilesHttpLive = HttpApiBuilder.group(
  WebPlusApi,
  "files",
  (handlers) =>
    Effect.gen(function*() {
      const files = yield* Files
      return handlers
        .handle("uploadFile", ({ payload, request }) => files.upload(request.headers["content-type"] ?? "", payload))
        .handle("listFiles", ({ urlParams }) => files.list(urlParams))
        .handle("getFile", ({ path }) => files.get(path.id))
        .handle("downloadFile", ({ headers, path }) => files.download(path.id, headers["if-none-match"]))
        .handle("deleteFile", ({ path }) => files.remove(path.id))
        .handle("requestAnalysis", ({ path, payload }) => files.requestAnalysis(path.id, payload))
        .handle("listAnalyses", ({ path }) => files.listAnalyses(path.id))
        .handle("getAnalysis", ({ path }) => files.getAnalysis(path.id, path.analysisId))
    })
)
