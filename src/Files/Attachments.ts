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

/**
 * The texts of a branch's attachments, by `attachmentKey(messageId, fileId)`: the text; `null` for
 * a file deleted since; no entry for an attachment the question does not really carry (named in
 * its metadata by a client, not recorded with it), which is left out.
 */
export type AttachmentTexts = ReadonlyMap<string, string | null>

export const attachmentKey = (messageId: string, fileId: string) => `${messageId}\u0000${fileId}`

const noTexts: Effect.Effect<AttachmentTexts> = Effect.succeed(new Map())

export class Attachments extends Effect.Service<Attachments>()("Files/Attachments", {
  effect: Effect.gen(function*() {
    const { files: settings } = yield* AppConfig
    const repo = yield* FilesRepo
    const storage = yield* FileStorage

    /**
     * The files a turn attaches: each must be the user's and hold readable text (422 on the
     * offending `fileIds` entry otherwise). Their texts are read now, before anything is stored,
     * so the turn does not wait for them once its answer exists.
     */
    const check = (userId: UserId, ids: ReadonlyArray<FileId>) =>
      Effect.gen(function*() {
        const attached: Array<Attachment> = []
        for (const [index, id] of ids.entries()) {
          if (attached.some((file) => file.id === id)) continue
          const found = yield* repo.findOwn(id, userId)
          if (found._tag === "None") return yield* invalid(["fileIds", index], "No such file")
          const file = found.value
          if (!hasReadableText(file.contentType)) {
            return yield* invalid(["fileIds", index], `Text cannot be read from ${file.contentType} files`)
          }
          yield* textOf(file)
          attached.push({ id: file.id, name: file.originalName, contentType: file.contentType })
        }
        return attached
      })

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
     * The texts of the attachments the branch's questions carry (nothing read when none names one),
     * each cut at `FILE_ANALYSIS_MAX_CHARS`. Only what `message_files` records counts: a question's
     * metadata alone cannot bring a file's text to the model.
     */
    const texts = (userId: UserId, branch: ReadonlyArray<MessageView>): Effect.Effect<AttachmentTexts> => {
      const named = branch.flatMap((message) => attachmentsOf(message).map((file) => [message.id, file.id] as const))
      if (named.length === 0) return noTexts
      return Effect.gen(function*() {
        const recorded = new Set(
          (yield* repo.attachedTo(Array.from(new Set(named.map(([messageId]) => messageId))))).map((row) =>
            attachmentKey(row.messageId, row.fileId)
          )
        )
        const texts = new Map<string, string | null>()
        for (const [messageId, fileId] of named) {
          const key = attachmentKey(messageId, fileId)
          const found = yield* repo.findOwn(fileId, userId)
          // Deleted since (its record went with it): named as such. Existing but never attached: left out.
          if (found._tag === "None") texts.set(key, null)
          else if (recorded.has(key)) texts.set(key, yield* textOf(found.value))
        }
        return texts
      })
    }

    return { check, texts } as const
  })
}) {}
