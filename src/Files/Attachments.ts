/**
 * Files attached to the questions of a chat: checked when a turn names them, recorded with the
 * question (rows of `message_files`, and `metadata.attachments` naming them), and read again at
 * every turn whose branch holds them, so that the model is sent their text as part of the question.
 */
import { Effect, Schema } from "effect"
import { AppConfig } from "../Config.js"
import type { MessageView } from "../Domain/Conversation.js"
import { invalid } from "../Domain/Errors.js"
import type { StoredFile } from "../Domain/File.js"
import { FileId, type UserId } from "../Domain/Ids.js"
import { hasReadableText } from "./Content.js"
import { FilesRepo } from "./FilesRepo.js"
import { FileStorage } from "./Storage.js"

/** A file as a question names it (in `metadata.attachments`). */
export const Attachment = Schema.Struct({ id: FileId, name: Schema.String, contentType: Schema.String })
export type Attachment = typeof Attachment.Type

const decodeAttachments = Schema.decodeUnknownOption(Schema.Array(Attachment))

/** The attachments a message names, if any. */
export const attachmentsOf = (message: MessageView): ReadonlyArray<Attachment> => {
  const named = message.metadata["attachments"]
  if (named === undefined) return []
  const decoded = decodeAttachments(named)
  return decoded._tag === "Some" ? decoded.value : []
}

/** The texts of attached files by id; `null` for a file deleted since. */
export type AttachmentTexts = ReadonlyMap<string, string | null>

const noTexts: Effect.Effect<AttachmentTexts> = Effect.succeed(new Map())

export class Attachments extends Effect.Service<Attachments>()("Files/Attachments", {
  effect: Effect.gen(function*() {
    const { files: settings } = yield* AppConfig
    const repo = yield* FilesRepo
    const storage = yield* FileStorage

    /** The files a turn attaches: each must be the user's and hold readable text (422 otherwise). */
    const check = (userId: UserId, ids: ReadonlyArray<FileId>) =>
      Effect.forEach(Array.from(new Set(ids)), (id, index) =>
        Effect.flatMap(repo.findOwn(id, userId), (found) => {
          if (found._tag === "None") return Effect.fail(invalid(["fileIds", index], "No such file"))
          const file = found.value
          if (!hasReadableText(file.contentType)) {
            return Effect.fail(
              invalid(["fileIds", index], `Text cannot be read from ${file.contentType} files`)
            )
          }
          const attachment: Attachment = { id: file.id, name: file.originalName, contentType: file.contentType }
          return Effect.succeed(attachment)
        }))

    // A file's content never changes: its text, once read (a PDF's takes a worker), is kept for the
    // next turns of this instance, the newest `cachedTexts` of them.
    const cache = new Map<string, string>()
    const cachedTexts = 32

    const textOf = (file: StoredFile) => {
      const kept = cache.get(file.sha256)
      if (kept !== undefined) return Effect.succeed(kept)
      return storage.readText(file.storageKey, file.contentType, settings.analysisMaxChars).pipe(
        Effect.tap((text) =>
          Effect.sync(() => {
            if (cache.size >= cachedTexts) cache.delete(cache.keys().next().value!)
            cache.set(file.sha256, text)
          })
        ),
        // The turn goes on without it, saying so.
        Effect.catchAll((error) =>
          Effect.as(
            Effect.logWarning("An attached file's text could not be read", error),
            "[The text of this file could not be read]"
          )
        )
      )
    }

    /**
     * The texts of the files the branch's messages carry (none read when no message carries one),
     * each cut at `FILE_ANALYSIS_MAX_CHARS`.
     */
    const texts = (userId: UserId, branch: ReadonlyArray<MessageView>): Effect.Effect<AttachmentTexts> => {
      const ids = new Set<FileId>()
      for (const message of branch) for (const attachment of attachmentsOf(message)) ids.add(attachment.id)
      if (ids.size === 0) return noTexts
      return Effect.map(
        Effect.forEach(ids, (id) =>
          Effect.flatMap(
            repo.findOwn(id, userId),
            (found): Effect.Effect<readonly [string, string | null]> =>
              found._tag === "None"
                ? Effect.succeed([id, null])
                : Effect.map(textOf(found.value), (text) => [id, text])
          )),
        (entries) => new Map(entries)
      )
    }

    return { check, texts } as const
  })
}) {}
