import { HttpApiBuilder, HttpBody, type HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServerRequest, NodeMultipart } from "@effect/platform-node"
import { Effect, Stream } from "effect"
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

/**
 * A download whose content fails on its way (a stored content that does not open: `FileStorage`)
 * has sent its headers and part of its body: its connection is cut, so the client sees a broken
 * response and cannot take what it received for the whole file (left alone, the platform would
 * end the response as if it were complete, short of its `Content-Length`, on a connection kept
 * open).
 */
const cutOnFailure =
  (request: HttpServerRequest.HttpServerRequest) => (response: HttpServerResponse.HttpServerResponse) =>
    response.body._tag !== "Stream" ? response : HttpServerResponse.setBody(
      response,
      HttpBody.stream(
        Stream.tapErrorCause(
          response.body.stream,
          () => Effect.sync(() => NodeHttpServerRequest.toServerResponse(request).destroy())
        ),
        response.body.contentType,
        response.body.contentLength
      )
    )

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
        .handle(
          "downloadFile",
          ({ headers, path, request }) =>
            Effect.map(files.download(path.id, headers["if-none-match"]), cutOnFailure(request))
        )
        .handle("deleteFile", ({ path }) => files.remove(path.id))
        .handle("requestAnalysis", ({ path, payload }) => files.requestAnalysis(path.id, payload))
        .handle("listAnalyses", ({ path }) => files.listAnalyses(path.id))
        .handle("getAnalysis", ({ path }) => files.getAnalysis(path.id, path.analysisId))
    })
)
