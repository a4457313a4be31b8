/**
 * Retrieval of attached files' passages, on when `EMBEDDING_MODEL` names a model.
 *
 * A file with readable text is split into passages (`splitPassages`: about `targetChars` characters
 * on paragraph and sentence boundaries, each starting with the end of the one before) and each is
 * embedded by that model, in the background (the job queue `file-embedding`, one job per file):
 * queued when the file is uploaded and, at start-up, for the files that model has not split yet, so
 * files uploaded before the setting was on get their passages without waiting to be attached.
 *
 * A chat turn whose attachment's text does not fit (cut at `FILE_ANALYSIS_MAX_CHARS`, or more than its
 * share of the model's window) sends that attachment as its passages closest to the question instead
 * (`narrow`), when they are ready; otherwise, and whenever retrieval cannot be done, the text as
 * before. Every embedding of a file's passages or of a question goes through `embedForFiles`.
 */
import { Effect, Either, Option, Schema } from "effect"
import { RateLimits } from "../Auth/RateLimits.js"
import { AppConfig } from "../Config.js"
import type { MessageView } from "../Domain/Conversation.js"
import { type NotFound, type RateLimited, type ServiceUnavailable } from "../Domain/Errors.js"
import { FileId } from "../Domain/Ids.js"
import type { Spender } from "../Gateway/UsageRepo.js"
import * as Jobs from "../Jobs.js"
import {
  cosine,
  embeddingJobs,
  type EmbeddingModel,
  EmbeddingModels,
  type EmbeddingUnavailable
} from "../Models/Embedding.js"
import type { ProviderFailure } from "../Models/Errors.js"
import { type AttachedContent, type AttachmentContents, attachmentKey, attachmentsOf } from "./Attachments.js"
import { hasReadableText } from "./Content.js"
import { type Passage, type PassageSetRow, PassagesRepo, type StoredPassage } from "./PassagesRepo.js"
import { FileStorage } from "./Storage.js"

export const passageQueue = "file-embedding"
export const PassageJob = Schema.Struct({ fileId: FileId })

/** What a passage aims at, at most, and how much of the one before it repeats. */
const targetChars = 1_500
const maxChars = 2_000
const overlapChars = 200
/** At most this many passages a file: its text past them is not split. */
export const maxPassages = 2_000
/** Texts per embeddings request. */
const batchSize = 64

/** How the error of passages a spent budget refused begins. */
const budgetRefusal = "Not embedded (the owner's token budget): "

/** Where a unit of text ends: a paragraph, a line, or a sentence followed by space. */
const boundary = /\n\s*\n|\n|[.!?。！？]["'”’)\]]*\s+/g

/**
 * `text` as passages of at most `maxChars` characters (about `targetChars`), cut between paragraphs,
 * lines or sentences where it can, each but the first beginning with the last sentences (up to
 * `overlapChars`) of the one before; at most `maxPassages`. Offsets count UTF-16 units of `text`.
 */
export const splitPassages = (text: string): Array<Passage> => {
  const units: Array<{ start: number; end: number }> = []
  const pushUnit = (start: number, end: number) => {
    while (start < end && /\s/.test(text[start]!)) start++
    while (end > start && /\s/.test(text[end - 1]!)) end--
    for (let at = start; at < end; at += maxChars) {
      let stop = Math.min(end, at + maxChars)
      // Never between the halves of a surrogate pair.
      if (stop < end && /[\uD800-\uDBFF]/.test(text[stop - 1]!)) stop--
      units.push({ start: at, end: stop })
      at = stop - maxChars
    }
  }
  let from = 0
  for (const match of text.matchAll(boundary)) {
    const end = match.index + match[0].length
    pushUnit(from, end)
    from = end
  }
  pushUnit(from, text.length)

  const passages: Array<Passage> = []
  let first = 0
  while (first < units.length && passages.length < maxPassages) {
    const start = units[first]!.start
    let next = first + 1
    while (next < units.length && units[next]!.end - start <= targetChars) next++
    const end = units[next - 1]!.end
    passages.push({ position: passages.length, text: text.slice(start, end), startOffset: start, endOffset: end })
    if (next >= units.length) break
    // The next passage starts with the last units of this one that fit in the overlap.
    let overlap = next
    while (overlap - 1 > first && end - units[overlap - 1]!.start <= overlapChars) overlap--
    first = overlap
  }
  return passages
}

/** A passage ranked against a query. */
export interface RankedPassage extends Passage {
  readonly score: number
}

/** `passages` by cosine similarity to the unit vector `query`, best first (among equals, the earlier first). */
const rank = (query: ReadonlyArray<number>, passages: ReadonlyArray<StoredPassage>): Array<RankedPassage> =>
  passages
    .map(({ endOffset, position, startOffset, text, vector }) => ({
      position,
      text,
      startOffset,
      endOffset,
      score: cosine(query, vector)
    }))
    .sort((a, b) => b.score - a.score || a.position - b.position)

/** What a file's view shows of its passages. */
export interface PassagesState {
  readonly status: "off" | "none" | "pending" | "ready" | "failed"
  readonly count: number
}

export class FilePassages extends Effect.Service<FilePassages>()("Files/Passages", {
  scoped: Effect.gen(function*() {
    const { embeddings: settings } = yield* AppConfig
    const repo = yield* PassagesRepo
    const storage = yield* FileStorage
    const embeddings = yield* EmbeddingModels
    const rateLimits = yield* RateLimits

    /**
     * Unit vectors of `texts` (a file's passages, or a question about its owner's files), by the
     * configured model: every embedding made for files goes through here.
     */
    const embedForFiles = (
      spender: Spender,
      model: EmbeddingModel,
      texts: ReadonlyArray<string>
    ): Effect.Effect<ReadonlyArray<ReadonlyArray<number>>, EmbeddingUnavailable | ProviderFailure> =>
      embeddings.embed(model, texts, batchSize, { spender, source: "files" })

    /**
     * Splits and embeds the file's text, unless that model already has; nothing for a file gone or
     * without text. Within its owner's token budget: a spent budget marks the file's passages failed
     * (for the next start-up, or the next turn it is attached to, to try again), unless another model
     * made them (that set stays as it is, unused, until the next start-up).
     */
    const embedFile = (name: string, { fileId }: typeof PassageJob.Type) =>
      Effect.gen(function*() {
        const found = yield* repo.fileToEmbed(fileId)
        if (Option.isNone(found) || !hasReadableText(found.value.contentType)) return 0
        const model = yield* embeddings.resolve(name)
        const modelId = model.resolved.model.id
        const [set] = yield* repo.sets([fileId])
        if (set !== undefined && set.status === "ready" && set.modelId === modelId) return 0
        const spent = yield* Effect.either(rateLimits.ownerBudget(found.value.userId))
        if (Either.isLeft(spent)) {
          yield* repo.markFailed(fileId, modelId, `${budgetRefusal}${spent.left.message}`)
          yield* Effect.logInfo(`A file's passages were not embedded: ${spent.left.message}`)
          return 0
        }
        const text = yield* storage.readText(found.value, found.value.contentType, maxPassages * targetChars)
        const passages = splitPassages(text)
        const vectors = yield* embedForFiles(
          { userId: found.value.userId, apiKeyId: null },
          model,
          passages.map((passage) => passage.text)
        )
        yield* repo.replace(
          fileId,
          modelId,
          passages.map((passage, index) => ({ ...passage, vector: vectors[index]! }))
        )
        return passages.length
      }).pipe(
        Effect.mapError((error) =>
          error._tag === "TextUnreadable"
            ? { message: `The file's text could not be read: ${error.reason}` }
            : error
        )
      )

    /**
     * The job that makes a file's passages from the state its set is in (none: never made), under an
     * id that the same job, offered again from that state on the same day (by the upload and the
     * backfill, by several instances' backfills, by each turn the file is attached to), shares: it is
     * queued once.
     */
    const workOf = (name: string, fileId: FileId, set: PassageSetRow | undefined) => ({
      job: { fileId },
      id: Jobs.stableJobId(
        passageQueue,
        fileId,
        name,
        set === undefined ? "new" : `${set.status}|${set.modelId ?? ""}|${set.updatedAt}`,
        new Date().toISOString().slice(0, 10)
      )
    })

    const { embedLater: queue } = yield* embeddingJobs({
      queue: passageQueue,
      schema: PassageJob,
      what: "a file's passages",
      run: embedFile,
      giveUp: ({ fileId }, reason) => repo.markFailed(fileId, null, reason),
      // Files uploaded before retrieval was on, or split by another model, or given up on.
      backfill: (modelId) =>
        Effect.map(
          repo.filesToEmbed(modelId),
          (files) =>
            files.flatMap((file) =>
              hasReadableText(file.contentType) && Option.isSome(settings.model)
                ? [workOf(settings.model.value, file.id, file.set ?? undefined)]
                : []
            )
        )
    })

    /** Has the file's passages made in the background (when retrieval is on and it has text). */
    const embedLater = (fileId: FileId, contentType: string): Effect.Effect<void> =>
      Option.isNone(settings.model) || !hasReadableText(contentType)
        ? Effect.void
        : queue(workOf(settings.model.value, fileId, undefined))

    /** What the views of `files` show of their passages (one query; none when retrieval is off). */
    const states = (
      files: ReadonlyArray<{ readonly id: FileId; readonly contentType: string }>
    ): Effect.Effect<ReadonlyMap<string, PassagesState>> =>
      Effect.gen(function*() {
        const withText = Option.isNone(settings.model)
          ? []
          : files.filter((file) => hasReadableText(file.contentType)).map((file) => file.id)
        const sets = new Map<string, PassageSetRow>((yield* repo.sets(withText)).map((row) => [row.fileId, row]))
        return new Map(files.map((file) => {
          const set = sets.get(file.id)
          return [file.id, set === undefined ? stateWithoutSet(file) : { status: set.status, count: set.passages }]
        }))
      })

    /**
     * What a file whose passages were never made shows (no query: a file just uploaded has none):
     * retrieval off, no text to split, or waiting for its job.
     */
    const stateWithoutSet = (file: { readonly contentType: string }): PassagesState =>
      Option.isNone(settings.model)
        ? { status: "off", count: 0 }
        : !hasReadableText(file.contentType)
        ? { status: "none", count: 0 }
        : { status: "pending", count: 0 }

    /**
     * The file's passages closest to `q`, best first, with their cosine similarity, and how many it
     * has (none while they are not ready). The file must be the caller's: checked by the caller.
     * `charge` (the caller's budgets and limits) is paid once retrieval is known to be on, before
     * the query is embedded; its tokens are recorded for `spender`.
     */
    const similar = (
      spender: Spender,
      fileId: FileId,
      query: { readonly q: string; readonly limit: number },
      charge: Effect.Effect<void, RateLimited>
    ): Effect.Effect<
      { readonly total: number; readonly items: ReadonlyArray<RankedPassage> },
      NotFound | RateLimited | ServiceUnavailable | ProviderFailure
    > =>
      Effect.gen(function*() {
        const { model, vector } = yield* embeddings.embedQuery(
          { off: "Retrieval of files' passages", name: "Retrieval" },
          query.q,
          { spender, source: "files" },
          charge
        )
        const passages = yield* repo.passagesOf(fileId, model.resolved.model.id, vector.length)
        return { total: passages.length, items: rank(vector, passages).slice(0, query.limit) }
      }).pipe(Effect.withSpan("FilePassages.similar"))

    /** An attachment as its passages: a line saying what they are, then each marked with its place. */
    const excerpts = (chosen: ReadonlyArray<RankedPassage>, total: number): string =>
      [
        `[Excerpts: this file is too long to send whole. These are the ${chosen.length} of its ${total} passages ` +
        "closest to the question, best first.]",
        ...chosen.map((passage) => `[passage ${passage.position + 1} of ${total}]\n${passage.text}`)
      ].join("\n\n")

    /**
     * The branch's attachments, with those whose text does not fit (cut at `FILE_ANALYSIS_MAX_CHARS`,
     * or longer than its share of `budgetTokens`: half of them, split between the branch's texts)
     * replaced by their passages closest to the last question, within that share, when they are
     * ready. Nothing is read nor called when no attachment is too long; any failure leaves the
     * contents as they were (logged): a turn never fails for want of retrieval.
     */
    const narrow = (
      spender: Spender,
      branch: ReadonlyArray<MessageView>,
      contents: AttachmentContents,
      budgetTokens: number
    ): Effect.Effect<AttachmentContents> => {
      if (Option.isNone(settings.model) || contents.size === 0) return Effect.succeed(contents)
      const texts: Array<{ readonly key: string; readonly fileId: FileId; readonly content: AttachedContent }> = []
      for (const message of branch) {
        for (const file of attachmentsOf(message)) {
          const key = attachmentKey(message.id, file.id)
          const content = contents.get(key)
          if (content?._tag === "text") texts.push({ key, fileId: file.id, content })
        }
      }
      const shareChars = Math.max(maxChars, Math.floor(budgetTokens / 2 / Math.max(1, texts.length)) * 4)
      const long = texts.filter(({ content }) =>
        content._tag === "text" && (content.truncated === true || content.text.length > shareChars)
      )
      const question = [...branch].reverse().find((message) => message.role === "user")?.content.trim() ?? ""
      if (long.length === 0 || question.length === 0) return Effect.succeed(contents)
      const name = settings.model.value
      return Effect.gen(function*() {
        const model = yield* embeddings.resolve(name)
        const modelId = model.resolved.model.id
        const sets = new Map(
          (yield* repo.sets(Array.from(new Set(long.map((item) => item.fileId))))).map((set) => [set.fileId, set])
        )
        const ready = new Set(
          Array.from(sets.values())
            .filter((set) => set.status === "ready" && set.modelId === modelId && set.passages > 0)
            .map((set) => set.fileId as string)
        )
        const narrowed = long.filter((item) => ready.has(item.fileId))
        // Passages a spent budget refused are asked for again (the job checks the budget before any
        // provider call); other failures wait for the next start-up, and a pending job for itself.
        yield* Effect.forEach(
          Array.from(sets.values()).filter((set) => set.status === "failed" && set.error?.startsWith(budgetRefusal)),
          (set) => queue(workOf(name, set.fileId, set)),
          { discard: true }
        )
        if (narrowed.length === 0) {
          yield* Effect.logDebug("Long attachments sent whole: their passages are not ready")
          return contents
        }
        const [vector] = yield* embedForFiles(spender, model, [question])
        const replaced = new Map(contents)
        // Each file's passages ranked once (a file attached twice), kept without their vectors: only
        // one file's vectors are held at a time.
        const rankedByFile = new Map<string, ReadonlyArray<RankedPassage>>()
        for (const { fileId, key } of narrowed) {
          const ranked = rankedByFile.get(fileId) ??
            rank(vector!, yield* repo.passagesOf(fileId, modelId, vector!.length))
          rankedByFile.set(fileId, ranked)
          if (ranked.length === 0) continue
          const chosen: Array<RankedPassage> = []
          let used = 0
          for (const passage of ranked) {
            if (chosen.length > 0 && used + passage.text.length > shareChars) break
            chosen.push(passage)
            used += passage.text.length
          }
          replaced.set(key, { _tag: "text", text: excerpts(chosen, ranked.length) })
        }
        return replaced as AttachmentContents
      }).pipe(
        Effect.catchAll((error) =>
          Effect.as(
            Effect.logWarning(`Long attachments sent whole: retrieval failed: ${error.message}`),
            contents
          )
        ),
        Effect.withSpan("FilePassages.narrow")
      )
    }

    return { embedLater, states, stateWithoutSet, similar, narrow } as const
  })
}) {}
