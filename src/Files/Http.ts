import { HttpApiBuilder, type HttpServerRequest } from "@effect/platform"
import { NodeHttpServerRequest, NodeMultipart } from "@effect/platform-node"
import { Effect } from "effect"
import { WebPlusApi } from "../Api.js"
import { Files } from "../Files.js"
import { utf8FileNames } from "./FileNames.js"

const boundaryParameter = /;\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))/i

/**
 * The parts of a multipart request, read from its body with non-Latin-1 file names restated so
 * that the parser keeps them (`utf8FileNames`).
 */
const partsOf = (request: HttpServerRequest.HttpServerRequest) => {
  const incoming = NodeHttpServerRequest.toIncomingMessage(request)
  const match = boundaryParameter.exec(request.headers["content-type"] ?? "")
  const boundary = match?.[1] ?? match?.[2]
  return NodeMultipart.stream(
    boundary === undefined ? incoming : incoming.pipe(utf8FileNames(boundary)),
    incoming.headers
  )
}

export const FilesHttpLive = HttpApiBuilder.group(
  WebPlusApi,
  "files",
  (handlers) =>
    Effect.gen(function*() {
      const files = yield* Files
      return handlers
        .handleRaw("uploadFile", ({ request }) => files.upload(request.headers["content-type"] ?? "", partsOf(request)))
        .handle("filesUsage", () => files.usage)
        .handle("listFiles", ({ urlParams }) => files.list(urlParams))
        .handle("getFile", ({ path }) => files.get(path.id))
        .handle("filePassages", ({ path, urlParams }) => files.similarPassages(path.id, urlParams))
        .handle("downloadFile", ({ headers, path }) => files.download(path.id, headers["if-none-match"]))
        .handle("deleteFile", ({ path }) => files.remove(path.id))
        .handle("requestAnalysis", ({ path, payload }) => files.requestAnalysis(path.id, payload))
        .handle("listAnalyses", ({ path }) => files.listAnalyses(path.id))
        .handle("getAnalysis", ({ path }) => files.getAnalysis(path.id, path.analysisId))
    })
)
