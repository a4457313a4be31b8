/**
 * Files: a user's uploads, kept by `FileStorage`, described by rows of `files`, and analysed in the
 * background by a model (`file_analyses`, through the job queue `file-analysis`).
 *
 * An upload is read once, as it arrives: it is hashed, measured against `FILES_MAX_SIZE` (refused
 * as soon as it passes it) and checked for text on the way to storage, and its type is decided from
 * its first bytes. Only then is its row written; a refused or failed upload leaves nothing.
 */
import * as PersistedQueue from "@effect/experimental/PersistedQueue"
import type { Multipart } from "@effect/platform"
import { HttpServerResponse, Multipart as Multiparts } from "@effect/platform"
import { isPlatformError, type PlatformError } from "@effect/platform/Error"
import { SqlClient } from "@effect/sql"
import { Effect, Option, Schema, Stream } from "effect"
import { AuditLog } from "./Audit.js"
import { requirePermission } from "./Auth/Policy.js"
import { RateLimits } from "./Auth/RateLimits.js"
import { AppConfig } from "./Config.js"
import type { Actor } from "./Domain/Actor.js"
import { invalid, NotFound, orNotFound, PayloadTooLarge, type ValidationError } from "./Domain/Errors.js"
import { FileAnalysis, StoredFile } from "./Domain/File.js"
import { ApiKeyId, FileAnalysisId, type FileId, type UserId } from "./Domain/Ids.js"
import { pageByCreation } from "./Domain/Pagination.js"
import {
  FileAnalysisView,
  FilesUsage,
  FileView,
  PassageMatch,
  PassageMatches,
  type PassageSearch,
  PassagesStatus,
  type RequestAnalysisPayload,
  UnsupportedMediaType,
  uploadOverheadBytes
} from "./Files/Api.js"
import { detectContentType, hasReadableText, isAllowedType, sanitizeFileName } from "./Files/Content.js"
import { type AnalysisJobRow, FilesRepo } from "./Files/FilesRepo.js"
import { FilePassages, type PassagesState } from "./Files/Passages.js"
import { type ContentTooLarge, FileStorage, type WrittenContent } from "./Files/Storage.js"
import { UsageRepo } from "./Gateway/UsageRepo.js"
import { GraphRepo } from "./Graph/GraphRepo.js"
import * as Jobs from "./Jobs.js"
import { ModelRegistry } from "./Models.js"
import { complete, jsonObjectIn, recordCompletionUsage } from "./Models/Completion.js"
import { EventHub, FileAnalysisEvent } from "./Models/Events.js"
import { inTransaction, storedNow, transactionLock } from "./Sql.js"

/**
 * The queue of analyses to run, and what each of its jobs carries: the analysis, and the API key it
 * was requested with (its usage is recorded for the key too; absent for a session).
 */
export const analysisQueue = "file-analysis"
export const AnalysisJob = Schema.Struct({ analysisId: FileAnalysisId, apiKeyId: Schema.optional(ApiKeyId) })

/**
 * Whether the multipart parser stopped at a limit. While streaming, the parser's own limit on a
 * part comes as an `InternalError` whose cause says `ReachedLimit`.
 */
const overLimit = (error: Multipart.MultipartError) =>
  error.reason === "FileTooLarge" || error.reason === "BodyTooLarge" ||
  (typeof error.cause === "object" && error.cause !== null && "_tag" in error.cause &&
    error.cause._tag === "ReachedLimit")

type StoreFailure = ValidationError | Multipart.MultipartError | PlatformError | ContentTooLarge

const analysisPrompt = [
  "You analyse documents. Read the document the user sends and answer with one JSON object only,",
  "no other text, of this shape:",
  `{"summary": "three sentences at most", "keyPoints": ["…"], "topics": ["…"], "language": "ISO 639-1 code"}`
].join(" ")

/** What the model's answer is kept as: its JSON object when it gave one, else its text as the summary. */
export const insightsOf = (answer: string): Record<string, unknown> =>
  Option.getOrElse(jsonObjectIn(answer), () => ({ summary: answer.replace(/\0/g, "").trim() }))

/** `Content-Disposition` for a download: an ASCII name for old clients, the exact one as RFC 5987 says. */
const attachment = (name: string) => {
  const ascii = name.replace(/[^\x20-\x7e]/g, "_").replace(/["\\]/g, "_")
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`
}

const fileView = (file: StoredFile, passages?: PassagesState) =>
  new FileView({
    id: file.id,
    name: file.originalName,
    contentType: file.contentType,
    sizeBytes: file.sizeBytes,
    sha256: file.sha256,
    createdAt: file.createdAt,
    ...(passages === undefined ? {} : { passages: new PassagesStatus(passages, true) })
  }, true)

const analysisView = (analysis: FileAnalysis) =>
  new FileAnalysisView({
    id: analysis.id,
    fileId: analysis.fileId,
    status: analysis.status,
    modelId: analysis.modelId,
    analysis: analysis.analysis,
    extractedText: analysis.extractedText,
    error: analysis.error,
    attempts: analysis.attempts,
    createdAt: analysis.createdAt,
    updatedAt: analysis.updatedAt,
    completedAt: Option.getOrNull(analysis.completedAt)
  }, true)

/** Whether an `If-None-Match` header names `etag` (or any: `*`); weak tags compare by their value. */
const matchesEtag = (header: string, etag: string): boolean =>
  header.split(",").some((tag) => {
    const trimmed = tag.trim()
    return trimmed === "*" || trimmed.replace(/^W\//, "") === etag
  })

export class Files extends Effect.Service<Files>()("Files", {
  scoped: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const { files: settings } = yield* AppConfig
    const repo = yield* FilesRepo
    const graph = yield* GraphRepo
    const audit = yield* AuditLog
    const storage = yield* FileStorage
    const registry = yield* ModelRegistry
    const events = yield* EventHub
    const passages = yield* FilePassages
    const rateLimits = yield* RateLimits
    const usageRecords = yield* UsageRepo
    const transaction = inTransaction(sql)
    const jobs = yield* PersistedQueue.make({ name: analysisQueue, schema: AnalysisJob })

    const readable = requirePermission("files:read")
    const writable = requirePermission("files:write")
    const findOwn = (actor: Actor, id: FileId) => repo.findOwn(id, actor.userId).pipe(orNotFound("No such file"))

    // --- upload

    const tooLarge = new PayloadTooLarge({
      message: `The file exceeds the limit of ${settings.maxSize} bytes`,
      limitBytes: settings.maxSize
    })
    const notMultipart = invalid(["body"], "Expected a multipart/form-data body with one file in the part `file`")

    /** Refused because of the user's quota: what the upload would take past it. */
    const overQuota = (left: number) =>
      new PayloadTooLarge({
        message: `The file exceeds the space left in your storage quota (${left} of ${
          Option.getOrElse(settings.quotaPerUser, () => 0)
        } bytes)`,
        limitBytes: left
      })

    /** What the user may still store: `None` without a quota. */
    const roomOf = (userId: UserId) =>
      Option.match(settings.quotaPerUser, {
        onNone: () => Effect.succeedNone,
        onSome: (quota) => Effect.map(repo.usageOf(userId), ({ bytes }) => Option.some(Math.max(0, quota - bytes)))
      })

    /**
     * Stores the part `file` of a multipart body, at most `limit` bytes (`refused` past them); the
     * other parts are read past.
     */
    const storeFilePart = (
      parts: Stream.Stream<Multipart.Part, Multipart.MultipartError>,
      limit: number,
      refused: PayloadTooLarge
    ) => {
      let stored: { readonly written: WrittenContent; readonly name: string } | undefined
      // The file's own limit is counted exactly by `storage.write`; the parser bounds the whole body.
      const limited = Multiparts.withLimitsStream(parts, {
        maxFileSize: Option.none(),
        maxTotalSize: Option.some(settings.maxSize + uploadOverheadBytes)
      })
      return Stream.runForEach(limited, (part): Effect.Effect<void, StoreFailure> => {
        if (part._tag !== "File") return Effect.void
        if (part.key !== "file") return Stream.runDrain(part.content)
        if (stored !== undefined) return Effect.fail(invalid(["file"], "Send one file per upload"))
        return Effect.map(storage.write(part.content, limit), (written) => {
          stored = { written, name: part.name }
        })
      }).pipe(
        Effect.catchTags({
          ContentTooLarge: () => Effect.fail(refused),
          MultipartError: (error) => Effect.fail(overLimit(error) ? tooLarge : notMultipart)
        }),
        // The storage failing (a full disk, say) is the server's fault, not the request's.
        Effect.catchIf(isPlatformError, Effect.die),
        // A part stored before the body went wrong goes with it.
        Effect.onError(() =>
          stored === undefined ? Effect.void : Effect.ignore(storage.remove(stored.written.storageKey))
        ),
        Effect.map(() => stored)
      )
    }

    const upload = (contentType: string, parts: Stream.Stream<Multipart.Part, Multipart.MultipartError>) =>
      Effect.gen(function*() {
        const actor = yield* writable
        // Anything else is not handed to the multipart parser at all.
        if (!/^multipart\/form-data\s*;.*\bboundary=/i.test(contentType)) return yield* notMultipart
        const room = yield* roomOf(actor.userId)
        const byQuota = Option.isSome(room) && room.value < settings.maxSize
        const stored = yield* storeFilePart(
          parts,
          byQuota ? room.value : settings.maxSize,
          byQuota ? overQuota(room.value) : tooLarge
        )
        if (stored === undefined) return yield* notMultipart
        const { name: rawName, written } = stored
        // Until its row is committed, a refused or failed upload takes its stored content with it;
        // after that, the content belongs to the file (a failure then must not leave a row without it).
        const file = yield* Effect.gen(function*() {
          if (written.sizeBytes === 0) return yield* invalid(["file"], "The file is empty")
          const name = sanitizeFileName(rawName)
          const contentType = yield* Effect.promise(() => detectContentType(written.head, written.isText, name))
          if (!isAllowedType(contentType, settings.allowedTypes)) {
            return yield* new UnsupportedMediaType({
              message: `Files of type ${contentType} are not accepted`,
              contentType
            })
          }
          return yield* transaction(Effect.gen(function*() {
            // Checked again with the user's uploads serialised: two at once cannot both take the last room.
            if (Option.isSome(settings.quotaPerUser)) {
              yield* transactionLock(sql, `files:${actor.userId}`)
              const left = Option.getOrElse(yield* roomOf(actor.userId), () => 0)
              if (written.sizeBytes > left) return yield* overQuota(left)
            }
            const file = yield* repo.insertFile(StoredFile.insert.make({
              userId: actor.userId,
              originalName: name,
              contentType,
              sizeBytes: written.sizeBytes,
              sha256: written.sha256,
              storageKey: written.storageKey,
              contentKeyCiphertext: written.contentKey?.ciphertext ?? null,
              contentKeyId: written.contentKey?.keyId ?? null,
              deletedAt: Option.none()
            }))
            yield* audit.record({
              action: "file.uploaded",
              actor,
              target: { type: "file", id: file.id },
              metadata: { contentType, sizeBytes: file.sizeBytes }
            })
            return file
          }))
        }).pipe(Effect.onError(() => Effect.ignore(storage.remove(written.storageKey))))
        yield* Effect.logInfo("File uploaded").pipe(
          Effect.annotateLogs({ fileId: file.id, contentType: file.contentType, sizeBytes: file.sizeBytes })
        )
        yield* passages.embedLater(file.id, file.contentType)
        return fileView(file, passages.stateWithoutSet(file))
      }).pipe(Effect.withSpan("Files.upload"))

    // --- reading and deleting

    const usage = Effect.gen(function*() {
      const actor = yield* readable
      const { bytes, files } = yield* repo.usageOf(actor.userId)
      return new FilesUsage({ files, usedBytes: bytes, quotaBytes: Option.getOrNull(settings.quotaPerUser) })
    }).pipe(Effect.withSpan("Files.usage"))

    const list = (query: { readonly limit?: number | undefined; readonly cursor?: string | undefined }) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const page = yield* pageByCreation(query, (after, rows) => repo.page(actor.userId, after, rows))
        const states = yield* passages.states(page.items)
        return { items: page.items.map((file) => fileView(file, states.get(file.id))), nextCursor: page.nextCursor }
      }).pipe(Effect.withSpan("Files.list"))

    const get = (id: FileId) =>
      Effect.gen(function*() {
        const file = yield* findOwn(yield* readable, id)
        return fileView(file, (yield* passages.states([file])).get(file.id))
      }).pipe(Effect.withSpan("Files.get"))

    /** The passages of one of the caller's files closest in meaning to `query.q` (`FilePassages`), best first. */
    const similarPassages = (id: FileId, query: typeof PassageSearch.Type) =>
      Effect.gen(function*() {
        const actor = yield* readable
        // It asks a model, as an analysis does.
        yield* requirePermission("models:use")
        const file = yield* findOwn(actor, id)
        // The query is embedded by a model: within the same budgets and limits as a chat turn.
        const found = yield* passages.similar(
          { userId: actor.userId, apiKeyId: actor.apiKeyId ?? null },
          file.id,
          { q: query.q, limit: query.limit ?? 5 },
          rateLimits.modelRequest(actor)
        )
        return new PassageMatches({
          total: found.total,
          items: found.items.map((passage) => new PassageMatch(passage, true))
        }, true)
      }).pipe(Effect.withSpan("Files.similarPassages"))

    /**
     * The content as an attachment, streamed from storage, never interpreted by the browser; 304
     * without it when `ifNoneMatch` names its `ETag` (its hash: a file's content never changes).
     */
    const download = (id: FileId, ifNoneMatch?: string) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const file = yield* findOwn(actor, id)
        const etag = `"${file.sha256}"`
        const caching = { "cache-control": "private, no-cache", etag }
        if (ifNoneMatch !== undefined && matchesEtag(ifNoneMatch, etag)) {
          return HttpServerResponse.empty({ status: 304, headers: caching })
        }
        const type = file.contentType.startsWith("text/") ? `${file.contentType}; charset=utf-8` : file.contentType
        return HttpServerResponse.stream(storage.read(file), {
          contentType: type,
          contentLength: file.sizeBytes,
          headers: {
            "content-disposition": attachment(file.originalName),
            "x-content-type-options": "nosniff",
            ...caching
          }
        })
      }).pipe(Effect.withSpan("Files.download"))

    /**
     * Deletes the row (its analyses and attachments go with it) and what the knowledge graph took
     * from it, then the content.
     */
    const remove = (id: FileId) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const key = yield* transaction(Effect.gen(function*() {
          const key = yield* repo.removeOwn(id, actor.userId)
          if (Option.isNone(key)) return yield* new NotFound({ message: "No such file" })
          yield* graph.forgetSource(actor.userId, "file", id)
          yield* audit.record({ action: "file.deleted", actor, target: { type: "file", id } })
          return key.value
        }))
        yield* storage.remove(key).pipe(
          Effect.catchAll((error) =>
            Effect.logWarning("A deleted file's content could not be removed", error).pipe(
              Effect.annotateLogs({ fileId: id })
            )
          )
        )
      }).pipe(Effect.withSpan("Files.remove"))

    // --- analyses

    const requestAnalysis = (id: FileId, payload: RequestAnalysisPayload) =>
      Effect.gen(function*() {
        const actor = yield* writable
        const file = yield* findOwn(actor, id)
        if (!hasReadableText(file.contentType)) {
          return yield* invalid(
            ["id"],
            `Text cannot be read from ${file.contentType} files: analyses cover text, PDF, Word, Excel and PowerPoint files`
          )
        }
        yield* requirePermission("models:use")
        // The same budgets and limits as a chat turn: an analysis is an answer asked of a model.
        yield* rateLimits.modelRequest(actor)
        const modelId = (yield* registry.usableModel(payload.modelId)).model.id
        const analysis = yield* Jobs.storeAndOffer({
          transaction,
          store: repo.insertAnalysis(FileAnalysis.insert.make({
            fileId: file.id,
            status: "pending",
            extractedText: null,
            analysis: {},
            error: null,
            modelId,
            attempts: 0,
            completedAt: Option.none()
          })),
          queue: jobs,
          job: (row) => ({ value: { analysisId: row.id, apiKeyId: actor.apiKeyId }, id: row.id }),
          abandon: (row) => repo.setStatus(row.id, { status: "error", error: "The job queue could not be reached" })
        })
        return analysisView(analysis)
      }).pipe(Effect.withSpan("Files.requestAnalysis"))

    const listAnalyses = (id: FileId) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const file = yield* findOwn(actor, id)
        return (yield* repo.analysesOf(file.id)).map(analysisView)
      }).pipe(Effect.withSpan("Files.listAnalyses"))

    const getAnalysis = (id: FileId, analysisId: FileAnalysisId) =>
      Effect.gen(function*() {
        const actor = yield* readable
        const file = yield* findOwn(actor, id)
        return yield* repo.analysisOf(analysisId, file.id).pipe(
          orNotFound("No such analysis"),
          Effect.map(analysisView)
        )
      }).pipe(Effect.withSpan("Files.getAnalysis"))

    /**
     * Runs one analysis: reads the file's text, asks the model, stores what it said. A provider that
     * fails is tried again by the queue; on the last attempt, or for a failure no retry would mend,
     * the analysis ends as `error` with the reason.
     */
    /** The owner's event sockets hear that an analysis ended (`file.analysis`). */
    const announce = (analysisId: FileAnalysisId, job: AnalysisJobRow, status: "complete" | "error") =>
      Effect.flatMap(
        storedNow,
        (at) =>
          events.publish(new FileAnalysisEvent({ analysisId, fileId: job.fileId, ownerId: job.userId, status, at }))
      )

    /** Ends an analysis as `error` with `reason`, unless it has ended already (or its file is gone). */
    const endInError = (analysisId: FileAnalysisId, reason: string) =>
      Effect.gen(function*() {
        const found = yield* repo.jobRow(analysisId)
        if (Option.isNone(found) || found.value.status === "complete" || found.value.status === "error") return
        yield* repo.setStatus(analysisId, { status: "error", error: reason })
        yield* announce(analysisId, found.value, "error")
      })

    /**
     * Runs one analysis: reads the file's text, asks the model, stores what it said. A provider that
     * fails is tried again by the queue (the analysis back to `pending` with the reason meanwhile);
     * a failure no retry would mend ends it as `error` at once, and so does the last attempt.
     */
    const analyse = ({ analysisId, apiKeyId }: typeof AnalysisJob.Type, attempt: Jobs.Attempt) =>
      Effect.gen(function*() {
        const found = yield* repo.jobRow(analysisId)
        // The file was deleted, or the job is delivered again after it ended.
        if (Option.isNone(found) || found.value.status === "complete" || found.value.status === "error") return
        const job = found.value
        const fail = (message: string) => endInError(analysisId, message)
        yield* repo.setStatus(analysisId, { status: "processing", attempts: attempt.attempts + 1 })
        if (job.modelId === null) return yield* fail("The model chosen for this analysis was removed")
        const text = yield* Effect.either(storage.readText(job, job.contentType, settings.analysisMaxChars))
        if (text._tag === "Left") return yield* fail("The file's text could not be read")
        const resolved = yield* Effect.either(registry.resolveAny(job.modelId))
        if (resolved._tag === "Left") return yield* fail("The model chosen for this analysis was removed")
        const answer = yield* Effect.either(complete(resolved.right, {
          messages: [
            { role: "system", content: analysisPrompt },
            { role: "user", content: `Document: ${job.originalName}\n\n${text.right}` }
          ],
          temperature: 0.2,
          maxTokens: 1024
        }))
        if (answer._tag === "Left") {
          const reason = `The model could not be reached: ${answer.left.message}`
          yield* repo.setStatus(analysisId, { status: "pending", error: reason })
          return yield* new Jobs.JobFailed({ message: reason })
        }
        // Recorded as soon as the model answered: a retry after a crash asks it again, and spends again.
        yield* recordCompletionUsage(
          usageRecords,
          { userId: job.userId, apiKeyId: apiKeyId ?? null },
          "analysis",
          resolved.right,
          answer.right
        )
        yield* repo.setStatus(analysisId, {
          status: "complete",
          error: null,
          extractedText: text.right,
          analysis: insightsOf(answer.right.text)
        })
        yield* announce(analysisId, job, "complete")
      }).pipe(Effect.annotateLogs({ analysisId }))

    yield* Jobs.runWorkers(jobs, {
      name: analysisQueue,
      handle: analyse,
      giveUp: ({ analysisId }, reason) => endInError(analysisId, reason)
    })

    return {
      upload,
      usage,
      list,
      get,
      similarPassages,
      download,
      remove,
      requestAnalysis,
      listAnalyses,
      getAnalysis
    } as const
  })
}) {}
