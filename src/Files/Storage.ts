/**
 * Where files' contents live, one per upload under a random key: by default a directory
 * (`FILES_DIR`, by default `files` under `DATA_DIR`), spread over 256 subdirectories; with
 * `FILES_STORAGE=s3`, objects in an S3-compatible store (`ObjectStore.ts`). Either way a content is
 * written to `tmp/` under `FILES_DIR` first, measured, hashed and checked for text on the way, and
 * only then moved (or sent) into place whole, so a failed or refused upload leaves nothing behind
 * and a reader never sees half a file.
 *
 * With `FILES_ENCRYPTION=on` (the default) a content is encrypted on its way to the scratch file,
 * under a data key of its own sealed under `ENCRYPTION_KEYS` (`ContentCipher.ts`); what is measured,
 * hashed and checked is the content itself, what is stored and sent to the object store (with its
 * own length and hash) is encrypted. Readers say how a content is stored (`StoredContent`: its
 * file's row), so contents stored as they are (before encryption, or with it off) are read as
 * before. A content that does not open fails with `ContentUnreadable`, logged here, and nothing
 * past its last authenticated segment is given out.
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Chunk, Data, Effect, Either, Option, Stream } from "effect"
import { createHash, randomBytes } from "node:crypto"
import { AppConfig } from "../Config.js"
import { CredentialCipher, SealContext, type Sealed } from "../Models/CredentialCipher.js"
import { cutText, officeKindOf, sniffLength, textChecker } from "./Content.js"
import { ContentUnreadable, dataKeyLength, newDataKey, openContent, sealContent } from "./ContentCipher.js"
import { makeObjectStore } from "./ObjectStore.js"
import { officeText } from "./Office.js"
import { pdfText } from "./Pdf.js"

/** The content passed the size limit while it was read. */
export class ContentTooLarge extends Data.TaggedError("ContentTooLarge")<{ readonly limitBytes: number }> {}

/** Where a content is and how it is stored: what its file's row says. */
export interface StoredContent {
  readonly storageKey: string
  /** Its data key, sealed under `contentKeyId` of `ENCRYPTION_KEYS`; both null: stored as it is. */
  readonly contentKeyCiphertext: string | null
  readonly contentKeyId: string | null
}

/** A content written into place, and what was learnt while writing it (of the content, not of its encryption). */
export interface WrittenContent {
  readonly storageKey: string
  readonly sizeBytes: number
  readonly sha256: string
  /** The first bytes (up to `sniffLength`), to decide the type on. */
  readonly head: Uint8Array
  /** Valid UTF-8 with no NUL byte. */
  readonly isText: boolean
  /** Its data key, sealed; null: stored as it is (`FILES_ENCRYPTION=off`). */
  readonly contentKey: Sealed | null
}

/** The bytes as stored (encrypted or not): what an object store is sent. */
interface StoredBytes {
  readonly sizeBytes: number
  readonly sha256: string
}

/** Where the contents are kept: the one thing that differs between the local directory and an object store. */
interface ContentPlace {
  /** Moves the scratch file `file`, of `stored` bytes, into place under `key`. */
  readonly place: (file: string, key: string, stored: StoredBytes) => Effect.Effect<void, PlatformError>
  readonly read: (key: string) => Stream.Stream<Uint8Array, PlatformError>
  readonly readAll: (key: string) => Effect.Effect<Uint8Array, PlatformError>
  /** One already gone is not an error. */
  readonly remove: (key: string) => Effect.Effect<void, PlatformError>
  /** For readiness: whether the place can be reached (`None`: nothing to check). */
  readonly check: Option.Option<Effect.Effect<void, string>>
}

export class FileStorage extends Effect.Service<FileStorage>()("Files/FileStorage", {
  scoped: Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const { files } = yield* AppConfig
    const cipher = yield* CredentialCipher
    const root = path.resolve(files.dir)
    const scratch = path.join(root, "tmp")
    yield* Effect.orDie(fs.makeDirectory(scratch, { recursive: true }))
    // What a crash left half-written. Only old files: another instance may be writing to a shared directory.
    const dayAgo = Date.now() - 24 * 60 * 60 * 1000
    yield* Effect.forEach(
      yield* Effect.orElseSucceed(fs.readDirectory(scratch), () => []),
      (name) =>
        fs.stat(path.join(scratch, name)).pipe(
          Effect.flatMap((info) =>
            Option.match(info.mtime, {
              onNone: () => Effect.void,
              onSome: (mtime) => mtime.getTime() < dayAgo ? fs.remove(path.join(scratch, name)) : Effect.void
            })
          ),
          Effect.ignore
        ),
      { discard: true }
    )

    const removeQuietly = (file: string) => Effect.ignore(fs.remove(file))

    const locate = (key: string) => path.join(root, key.slice(0, 2), key)
    const directory: ContentPlace = {
      place: (file, key) => {
        const target = locate(key)
        return Effect.zipRight(fs.makeDirectory(path.dirname(target), { recursive: true }), fs.rename(file, target))
      },
      read: (key) => fs.stream(locate(key)),
      readAll: (key) => fs.readFile(locate(key)),
      remove: (key) =>
        fs.remove(locate(key)).pipe(
          Effect.catchIf((error) => error._tag === "SystemError" && error.reason === "NotFound", () => Effect.void)
        ),
      check: Option.none()
    }
    const contents: ContentPlace = Option.isNone(files.s3) ? directory : yield* Effect.map(
      makeObjectStore(files.s3.value),
      (store): ContentPlace => ({
        place: (file, key, stored) =>
          store.put(key, { body: fs.stream(file), sizeBytes: stored.sizeBytes, sha256: stored.sha256 }),
        read: store.get,
        readAll: store.getAll,
        remove: store.remove,
        check: Option.some(store.check)
      })
    )

    // Only an object store is sent the stored bytes' hash; on disk, hashing them would be work for nothing.
    const hashesStored = Option.isSome(files.s3)

    /**
     * Writes `content` under a new key (encrypted when `encrypt`), hashing it and checking it for
     * text on the way; fails with `ContentTooLarge` as soon as it passes `limitBytes`, without
     * reading the rest.
     */
    const store = <E>(content: Stream.Stream<Uint8Array, E>, limitBytes: number, encrypt: boolean) =>
      Effect.gen(function*() {
        const key = randomBytes(16).toString("hex")
        const temporary = path.join(scratch, key)
        const hash = createHash("sha256")
        const text = textChecker()
        const head = new Uint8Array(sniffLength)
        let headLength = 0
        let size = 0
        const measured = Stream.mapEffect(content, (chunk) => {
          size += chunk.length
          if (size > limitBytes) return Effect.fail(new ContentTooLarge({ limitBytes }))
          hash.update(chunk)
          text.update(chunk)
          if (headLength < sniffLength) {
            const taken = chunk.subarray(0, sniffLength - headLength)
            head.set(taken, headLength)
            headLength += taken.length
          }
          return Effect.succeed(chunk)
        })
        const dataKey = encrypt ? newDataKey() : undefined
        const storedHash = dataKey !== undefined && hashesStored ? createHash("sha256") : undefined
        let storedSize = 0
        const stored = Stream.map(dataKey === undefined ? measured : sealContent(measured, dataKey, key), (chunk) => {
          storedSize += chunk.length
          storedHash?.update(chunk)
          return chunk
        })
        yield* Stream.run(stored, fs.sink(temporary)).pipe(Effect.onError(() => removeQuietly(temporary)))
        const written: WrittenContent = {
          storageKey: key,
          sizeBytes: size,
          sha256: hash.digest("hex"),
          head: head.slice(0, headLength),
          isText: text.isText(),
          contentKey: dataKey === undefined ? null : cipher.sealBytes(dataKey, SealContext.fileDataKey(key))
        }
        const storedBytes = { sizeBytes: storedSize, sha256: storedHash?.digest("hex") ?? written.sha256 }
        yield* contents.place(temporary, key, storedBytes).pipe(Effect.ensuring(removeQuietly(temporary)))
        return written
      })

    /** Writes `content` under a new key, encrypted unless `FILES_ENCRYPTION=off` (see `store`). */
    const write = <E>(content: Stream.Stream<Uint8Array, E>, limitBytes: number) =>
      store(content, limitBytes, files.encryption)

    /**
     * The content stored as it is under `storageKey`, written again encrypted under a new key
     * (whatever `FILES_ENCRYPTION` says): for `npm run cli -- encrypt-files`. The old one stays.
     */
    const writeEncrypted = (storageKey: string) => store(contents.read(storageKey), Number.POSITIVE_INFINITY, true)

    const logUnreadable = (storageKey: string) => (error: PlatformError | ContentUnreadable) =>
      error._tag === "ContentUnreadable"
        ? Effect.logError(error.message).pipe(Effect.annotateLogs({ storageKey, keyId: error.keyId }))
        : Effect.void

    /** The data key of the content under `storageKey`, or why it cannot be had. */
    const dataKeyOf = (
      sealed: string,
      keyId: string,
      storageKey: string
    ): Effect.Effect<Uint8Array, ContentUnreadable> =>
      Either.match(cipher.openBytes(sealed, keyId, SealContext.fileDataKey(storageKey)), {
        onLeft: (problem) =>
          Effect.fail(
            new ContentUnreadable({
              keyId,
              reason: problem === "key-absent"
                ? `its data key is sealed under key "${keyId}", absent from ENCRYPTION_KEYS`
                : `its data key does not open under key "${keyId}"`
            })
          ),
        onRight: (key) =>
          key.length === dataKeyLength
            ? Effect.succeed(new Uint8Array(key))
            : Effect.fail(new ContentUnreadable({ keyId, reason: "its data key is not 32 bytes" }))
      })

    /**
     * A stored content, as a stream of chunks, decrypted segment by segment when it is encrypted;
     * it fails (logged) at the first segment that does not open.
     */
    const read = (content: StoredContent): Stream.Stream<Uint8Array, PlatformError | ContentUnreadable> => {
      const { contentKeyCiphertext: sealed, contentKeyId: keyId, storageKey } = content
      if (sealed === null || keyId === null) return contents.read(storageKey)
      return Stream.unwrap(
        Effect.map(
          dataKeyOf(sealed, keyId, storageKey),
          (dataKey) => openContent(contents.read(storageKey), dataKey, storageKey, keyId)
        )
      ).pipe(Stream.tapError(logUnreadable(storageKey)))
    }

    /** A stored content, whole. */
    const readAll = (content: StoredContent): Effect.Effect<Uint8Array, PlatformError | ContentUnreadable> =>
      content.contentKeyCiphertext === null
        ? contents.readAll(content.storageKey)
        : Effect.map(Stream.runCollect(read(content)), (chunks) => Buffer.concat(Chunk.toReadonlyArray(chunks)))

    /**
     * The first `maxChars` characters of a stored content's text: UTF-8 for text types, read by
     * pdf.js for a PDF, from the XML inside for a Word, Excel or PowerPoint document (the whole
     * file is at most `FILES_MAX_SIZE`).
     */
    const readText = (content: StoredContent, contentType: string, maxChars: number) =>
      Effect.gen(function*() {
        const bytes = yield* readAll(content)
        const whole = contentType === "application/pdf"
          ? yield* pdfText(bytes)
          : officeKindOf(contentType) !== undefined
          ? yield* officeText(bytes, contentType, maxChars)
          : new TextDecoder("utf-8").decode(bytes)
        // PostgreSQL's text cannot hold NUL; a model has no use for it either.
        return cutText(whole.replace(/\0/g, ""), maxChars)
      })

    /** Removes a stored content; one already gone is not an error. */
    const remove = (key: string): Effect.Effect<void, PlatformError> => contents.remove(key)

    /** Readiness of the object store; `None` for the local directory (the database's volume's business). */
    const check = contents.check

    return { write, writeEncrypted, read, readAll, readText, remove, check } as const
  })
}) {}
