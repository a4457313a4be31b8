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
import type { ChatImage } from "../Providers/Chat.js"
import { cutText, hasReadableText, isSeenImage } from "./Content.js"
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
 * What an attachment brings the model: its text (`truncated` when it was cut at
 * `FILE_ANALYSIS_MAX_CHARS`), or the image it is.
 */
export type AttachedContent =
  | { readonly _tag: "text"; readonly text: string; readonly truncated?: boolean }
  | { readonly _tag: "image"; readonly image: ChatImage }

/**
 * The contents of a branch's attachments, by `attachmentKey(messageId, fileId)`: `null` for a file
 * deleted since; no entry for an attachment the question does not really carry (named in its
 * metadata by a client, not recorded with it), which is left out.
 */
export type AttachmentContents = ReadonlyMap<string, AttachedContent | null>

export const attachmentKey = (messageId: string, fileId: string) => `${messageId}\u0000${fileId}`

const noContents: Effect.Effect<AttachmentContents> = Effect.succeed(new Map())

export class Attachments extends Effect.Service<Attachments>()("Files/Attachments", {
  effect: Effect.gen(function*() {
    const { files: settings } = yield* AppConfig
    const repo = yield* FilesRepo
    const storage = yield* FileStorage

    /**
     * The files a turn attaches: each must be the user's, and hold readable text or be an image a
     * model can see (at most `CHAT_IMAGE_MAX_SIZE`); 422 on the offending `fileIds` entry
     * otherwise. Their contents are read now, before anything is stored, so the turn does not wait
     * for them once its answer exists.
     */
    const check = (userId: UserId, ids: ReadonlyArray<FileId>) =>
      Effect.gen(function*() {
        const attached: Array<Attachment> = []
        for (const [index, id] of ids.entries()) {
          if (attached.some((file) => file.id === id)) continue
          const found = yield* repo.findOwn(id, userId)
          if (found._tag === "None") return yield* invalid(["fileIds", index], "No such file")
          const file = found.value
          if (isSeenImage(file.contentType)) {
            if (file.sizeBytes > settings.chatImageMaxSize) {
              return yield* invalid(
                ["fileIds", index],
                `Images shown to a model are at most ${settings.chatImageMaxSize} bytes`
              )
            }
          } else if (!hasReadableText(file.contentType)) {
            return yield* invalid(["fileIds", index], `A model can neither read nor see ${file.contentType} files`)
          }
          yield* contentOf(file)
          attached.push({ id: file.id, name: file.originalName, contentType: file.contentType })
        }
        return attached
      })

    // A file's content never changes: what it brings the model, once read (a PDF's or an office
    // document's text takes a worker), is kept for the next turns of this instance: the newest
    // `cachedTexts` texts, and images up to `cachedImageBytes` of base64 in all.
    const texts = new Map<string, AttachedContent>()
    const cachedTexts = 32
    const images = new Map<string, AttachedContent & { readonly _tag: "image" }>()
    const cachedImageBytes = 32 * 1024 * 1024
    let imageBytes = 0

    const keepImage = (sha256: string, content: AttachedContent & { readonly _tag: "image" }) => {
      const size = content.image.data.length
      if (size > cachedImageBytes) return
      for (const [key, kept] of images) {
        if (imageBytes + size <= cachedImageBytes) break
        images.delete(key)
        imageBytes -= kept.image.data.length
      }
      images.set(sha256, content)
      imageBytes += size
    }

    const unreadable = (file: StoredFile) => (error: unknown): Effect.Effect<AttachedContent> =>
      Effect.as(
        Effect.logWarning("An attached file could not be read", error).pipe(Effect.annotateLogs({ fileId: file.id })),
        { _tag: "text", text: "[This file could not be read]" }
      )

    const contentOf = (file: StoredFile): Effect.Effect<AttachedContent> => {
      if (isSeenImage(file.contentType)) {
        const kept = images.get(file.sha256)
        if (kept !== undefined) return Effect.succeed(kept)
        return storage.readAll(file).pipe(
          Effect.map((bytes) => ({
            _tag: "image" as const,
            image: { mediaType: file.contentType, data: Buffer.from(bytes).toString("base64") }
          })),
          Effect.tap((content) => Effect.sync(() => keepImage(file.sha256, content))),
          // The turn goes on without it, saying so.
          Effect.catchAll(unreadable(file))
        )
      }
      const kept = texts.get(file.sha256)
      if (kept !== undefined) return Effect.succeed(kept)
      // One character more than is sent tells a text that was cut.
      return storage.readText(file, file.contentType, settings.analysisMaxChars + 1).pipe(
        Effect.map((text): AttachedContent =>
          text.length > settings.analysisMaxChars
            ? { _tag: "text", text: cutText(text, settings.analysisMaxChars), truncated: true }
            : { _tag: "text", text }
        ),
        Effect.tap((content) =>
          Effect.sync(() => {
            if (texts.size >= cachedTexts) texts.delete(texts.keys().next().value!)
            texts.set(file.sha256, content)
          })
        ),
        Effect.catchAll(unreadable(file))
      )
    }

    /**
     * What the attachments the branch's questions carry bring the model (nothing read when none
     * names one): texts cut at `FILE_ANALYSIS_MAX_CHARS`, and images. Only what `message_files`
     * records counts: a question's metadata alone cannot bring a file to the model.
     */
    const contents = (userId: UserId, branch: ReadonlyArray<MessageView>): Effect.Effect<AttachmentContents> => {
      const named = branch.flatMap((message) => attachmentsOf(message).map((file) => [message.id, file.id] as const))
      if (named.length === 0) return noContents
      return Effect.gen(function*() {
        const recorded = new Set(
          (yield* repo.attachedTo(Array.from(new Set(named.map(([messageId]) => messageId))))).map((row) =>
            attachmentKey(row.messageId, row.fileId)
          )
        )
        const found = new Map<string, AttachedContent | null>()
        for (const [messageId, fileId] of named) {
          const key = attachmentKey(messageId, fileId)
          const file = yield* repo.findOwn(fileId, userId)
          // Deleted since (its record went with it): named as such. Existing but never attached: left out.
          if (file._tag === "None") found.set(key, null)
          else if (recorded.has(key)) found.set(key, yield* contentOf(file.value))
        }
        return found
      })
    }

    return { check, contents } as const
  })
}) {}
