/** Files: upload, listing, download, deletion, and the background analysis of their content. */
import { HttpApiEndpoint, HttpApiGroup, HttpApiSchema, Multipart, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { Authentication } from "../Auth/Api.js"
import { Forbidden, NotFound, RateLimited, ServiceUnavailable } from "../Domain/Errors.js"
import { JsonObject, NonNegativeInt } from "../Domain/Fields.js"
import { AnalysisStatus } from "../Domain/File.js"
import { FileAnalysisId, FileId, LlmModelId } from "../Domain/Ids.js"
import { Page, PageParams } from "../Domain/Pagination.js"
import { request } from "../Domain/Request.js"
import { ProviderError, ProviderTimeout, ProviderUnavailable, ProviderUnreachable } from "../Models/Errors.js"

/** The upload's path: its body limit is `FILES_MAX_SIZE`, not `MAX_BODY_SIZE` (see `Http/ErrorModel.ts`). */
export const uploadPath = "/api/v1/files"

/** How many files one chat question may carry. */
export const maxAttachments = 10

/** Room for the multipart framing and the form's other fields, beyond the file itself. */
export const uploadOverheadBytes = 64 * 1024

export class PassagesStatus extends Schema.Class<PassagesStatus>("PassagesStatus")({
  status: Schema.Literal("off", "none", "pending", "ready", "failed").annotations({
    description: "`off`: retrieval is not configured (`EMBEDDING_MODEL`); `none`: the file has no text to " +
      "split; `pending`: its passages are being made; `ready`; `failed`: they could not be made (tried again " +
      "at the next start-up)"
  }),
  count: NonNegativeInt.annotations({ description: "How many passages the file's text was split into" })
}) {}

export class FileView extends Schema.Class<FileView>("FileView")({
  id: FileId,
  name: Schema.String.annotations({ description: "The uploaded file's name, sanitised" }),
  contentType: Schema.String.annotations({ description: "Detected from the content, not taken from the client" }),
  sizeBytes: NonNegativeInt,
  sha256: Schema.String.annotations({ description: "Hex SHA-256 of the content" }),
  createdAt: Schema.DateTimeUtc,
  passages: Schema.optional(PassagesStatus).annotations({
    description: "Whether the file's text is split into passages for retrieval (see \"Long documents\")"
  })
}) {}

/** The most passages one search answers. */
export const maxPassageResults = 50

export const PassageSearch = request(Schema.Struct({
  q: Schema.String.pipe(Schema.maxLength(1000), Schema.pattern(/\S/)).annotations({
    description: "What to look for, in words: it is embedded and compared with each passage"
  }),
  limit: Schema.optional(Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, maxPassageResults)))
    .annotations({ description: "How many passages to answer, best first (default 5)" })
}))

export class PassageMatch extends Schema.Class<PassageMatch>("PassageMatch")({
  position: NonNegativeInt.annotations({ description: "The passage's place in the file, from 0" }),
  text: Schema.String,
  startOffset: NonNegativeInt.annotations({
    description: "Where the passage starts in the file's text (UTF-16 units)"
  }),
  endOffset: NonNegativeInt.annotations({ description: "Where it ends, exclusive" }),
  score: Schema.Number.pipe(Schema.between(-1, 1)).annotations({
    description: "Cosine similarity of the passage's vector and the query's, from -1 to 1 (higher is closer)"
  })
}) {}

export class PassageMatches extends Schema.Class<PassageMatches>("PassageMatches")({
  total: NonNegativeInt.annotations({
    description: "How many passages the file has (0 while they are not ready: see the file's `passages`)"
  }),
  items: Schema.Array(PassageMatch)
}) {}

export class FilesUsage extends Schema.Class<FilesUsage>("FilesUsage")({
  files: NonNegativeInt,
  usedBytes: NonNegativeInt.annotations({ description: "The bytes your files take" }),
  quotaBytes: Schema.NullOr(NonNegativeInt).annotations({
    description: "The bytes you may keep (`FILES_QUOTA_PER_USER`); null: no limit"
  })
}) {}

export class FileAnalysisView extends Schema.Class<FileAnalysisView>("FileAnalysisView")({
  id: FileAnalysisId,
  fileId: FileId,
  status: AnalysisStatus.annotations({
    description: "`pending` (queued), `processing`, `complete` or `error` (see `error`)"
  }),
  modelId: Schema.NullOr(LlmModelId),
  analysis: JsonObject.annotations({
    description: "When complete: `summary`, `keyPoints`, `topics` and `language`, as the model gave them"
  }),
  extractedText: Schema.NullOr(Schema.String).annotations({
    description: "The text read from the file (at most `FILE_ANALYSIS_MAX_CHARS` characters)"
  }),
  error: Schema.NullOr(Schema.String),
  attempts: NonNegativeInt,
  createdAt: Schema.DateTimeUtc,
  updatedAt: Schema.DateTimeUtc,
  completedAt: Schema.NullOr(Schema.DateTimeUtc)
}) {}

export class RequestAnalysisPayload extends Schema.Class<RequestAnalysisPayload>("RequestAnalysisPayload")({
  modelId: Schema.optional(LlmModelId).annotations({
    description: "The model to analyse with; a usable one if omitted"
  })
}) {}

/** The content type is not accepted (`FILES_ALLOWED_TYPES`). */
export class UnsupportedMediaType extends Schema.TaggedError<UnsupportedMediaType>()(
  "UnsupportedMediaType",
  { message: Schema.String, contentType: Schema.String },
  HttpApiSchema.annotations({ status: 415, description: "The file's type (detected from its content) is not accepted" })
) {}

const FilePath = request(Schema.Struct({ id: FileId }))
const AnalysisPath = request(Schema.Struct({ id: FileId, analysisId: FileAnalysisId }))

export class FilesApi extends HttpApiGroup.make("files")
  .add(
    HttpApiEndpoint.post("uploadFile", uploadPath)
      .setPayload(request(HttpApiSchema.MultipartStream(Schema.Struct({ file: Multipart.SingleFileSchema }))))
      .addSuccess(FileView, { status: 201 })
      .addError(UnsupportedMediaType)
      .annotate(
        OpenApi.Summary,
        "Upload a file (multipart/form-data, part `file`); its type is detected from its content"
      )
  )
  .add(
    HttpApiEndpoint.get("listFiles", "/api/v1/files")
      .setUrlParams(PageParams)
      .addSuccess(Page(FileView))
      .annotate(OpenApi.Summary, "Your files, newest first")
  )
  .add(
    HttpApiEndpoint.get("filesUsage", "/api/v1/files/usage")
      .addSuccess(FilesUsage)
      .annotate(OpenApi.Summary, "How much your files take, and your quota")
  )
  .add(
    HttpApiEndpoint.get("getFile", "/api/v1/files/:id")
      .setPath(FilePath)
      .addSuccess(FileView)
      .addError(NotFound)
  )
  .add(
    HttpApiEndpoint.get("filePassages", "/api/v1/files/:id/passages")
      .setPath(FilePath)
      .setUrlParams(PassageSearch)
      .addSuccess(PassageMatches)
      .addError(NotFound)
      .addError(RateLimited)
      .addError(ServiceUnavailable)
      .addError(ProviderUnreachable)
      .addError(ProviderTimeout)
      .addError(ProviderError)
      .addError(ProviderUnavailable)
      .annotate(OpenApi.Summary, "The file's passages closest in meaning to a text, best first, with their scores")
      .annotate(
        OpenApi.Description,
        "Off unless the server sets `EMBEDDING_MODEL` (404 `NotFound` then, as for another user's file). " +
          "503 `ServiceUnavailable` when the configured model is not usable or cannot embed; the provider's " +
          "failures as 502, 503 and 504."
      )
  )
  .add(
    HttpApiEndpoint.get("downloadFile", "/api/v1/files/:id/content")
      .setPath(FilePath)
      .setHeaders(request(Schema.Struct({
        "if-none-match": Schema.optional(Schema.String.pipe(Schema.maxLength(1024))).annotations({
          description: "The `ETag` of a copy the client has: 304 without a body when it is still the content"
        })
      })))
      .addSuccess(
        Schema.Uint8ArrayFromSelf.pipe(
          HttpApiSchema.withEncoding({ kind: "Uint8Array", contentType: "application/octet-stream" })
        )
      )
      .addError(NotFound)
      .annotate(OpenApi.Summary, "The file's content, as an attachment, with its detected type")
  )
  .add(
    HttpApiEndpoint.del("deleteFile", "/api/v1/files/:id")
      .setPath(FilePath)
      .addSuccess(HttpApiSchema.NoContent)
      .addError(NotFound)
      .annotate(OpenApi.Summary, "Delete a file, its content and its analyses")
  )
  .add(
    HttpApiEndpoint.post("requestAnalysis", "/api/v1/files/:id/analyses")
      .setPath(FilePath)
      .setPayload(request(RequestAnalysisPayload))
      .addSuccess(FileAnalysisView, { status: 202 })
      .addError(NotFound)
      .addError(RateLimited)
      .annotate(
        OpenApi.Summary,
        "Queue an analysis of the file's text by a model; follow it with the analysis' own endpoint"
      )
      .annotate(
        OpenApi.Description,
        "Within the same budgets and limits as a chat turn (the token budgets, `CHAT_RATE_LIMIT_PER_USER`): " +
          "429 `RateLimited` with `Retry-After`, and nothing queued, when the caller is over one. The tokens " +
          "it takes are counted in the usage reports under the source `analysis`."
      )
  )
  .add(
    HttpApiEndpoint.get("listAnalyses", "/api/v1/files/:id/analyses")
      .setPath(FilePath)
      .addSuccess(Schema.Array(FileAnalysisView))
      .addError(NotFound)
      .annotate(OpenApi.Summary, "The file's analyses, newest first")
  )
  .add(
    HttpApiEndpoint.get("getAnalysis", "/api/v1/files/:id/analyses/:analysisId")
      .setPath(AnalysisPath)
      .addSuccess(FileAnalysisView)
      .addError(NotFound)
  )
  .addError(Forbidden)
  .middleware(Authentication)
  .annotate(OpenApi.Description, "Uploaded files, their contents, and analyses of their text by a model")
{}
