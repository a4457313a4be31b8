/**
 * Where files' contents live, one per upload under a random key: by default a directory
 * (`FILES_DIR`, by default `files` under `DATA_DIR`), spread over 256 subdirectories; with
 * `FILES_STORAGE=s3`, objects in an S3-compatible store (`ObjectStore.ts`). Either way a content is
 * written to `tmp/` under `FILES_DIR` first, measured, hashed and checked for text on the way, and
 * only then moved (or sent) into place whole, so a failed or refused upload leaves nothing behind
 * and a reader never sees half a file.
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Data, Effect, Option, Stream } from "effect"
import { createHash, randomBytes } from "node:crypto"
import { AppConfig } from "../Config.js"
import { cutText, officeKindOf, sniffLength, textChecker } from "./Content.js"
import { makeObjectStore } from "./ObjectStore.js"
import { officeText } from "./Office.js"
import { pdfText } from "./Pdf.js"

/** The content passed the size limit while it was read. */
export class ContentTooLarge extends Data.TaggedError("ContentTooLarge")<{ readonly limitBytes: number }> {}

/** A content written into place, and what was learnt while writing it. */
export interface WrittenContent {
  readonly storageKey: string
  readonly sizeBytes: number
  readonly sha256: string
  /** The first bytes (up to `sniffLength`), to decide the type on. */
  readonly head: Uint8Array
  /** Valid UTF-8 with no NUL byte. */
  readonly isText: boolean
}

/** Where the contents are kept: the one thing that differs between the local directory and an object store. */
interface ContentPlace {
  /** Moves the measured scratch file `file` into place under `key`. */
  readonly place: (file: string, key: string, written: WrittenContent) => Effect.Effect<void, PlatformError>
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
        place: (file, key, written) =>
          store.put(key, { body: fs.stream(file), sizeBytes: written.sizeBytes, sha256: written.sha256 }),
        read: store.get,
        readAll: store.getAll,
        remove: store.remove,
        check: Option.some(store.check)
      })
    )

    /**
     * Writes `content` under a new key, hashing it and checking it for text on the way; fails with
     * `ContentTooLarge` as soon as it passes `limitBytes`, without reading the rest.
     */
    const write = <E>(content: Stream.Stream<Uint8Array, E>, limitBytes: number) =>
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
        yield* Stream.run(measured, fs.sink(temporary)).pipe(Effect.onError(() => removeQuietly(temporary)))
        const written: WrittenContent = {
          storageKey: key,
          sizeBytes: size,
          sha256: hash.digest("hex"),
          head: head.slice(0, headLength),
          isText: text.isText()
        }
        yield* contents.place(temporary, key, written).pipe(Effect.ensuring(removeQuietly(temporary)))
        return written
      })

    /** A stored content, as a stream of chunks. */
    const read = (key: string): Stream.Stream<Uint8Array, PlatformError> => contents.read(key)

    /**
     * The first `maxChars` characters of a stored content's text: UTF-8 for text types, read by
     * pdf.js for a PDF, from the XML inside for a Word, Excel or PowerPoint document (the whole
     * file is at most `FILES_MAX_SIZE`).
     */
    const readText = (key: string, contentType: string, maxChars: number) =>
      Effect.gen(function*() {
        const bytes = yield* contents.readAll(key)
        const whole = contentType === "application/pdf"
          ? yield* pdfText(bytes)
          : officeKindOf(contentType) !== undefined
          ? yield* officeText(bytes, contentType, maxChars)
          : new TextDecoder("utf-8").decode(bytes)
        // PostgreSQL's text cannot hold NUL; a model has no use for it either.
        return cutText(whole.replace(/\0/g, ""), maxChars)
      })

    /** A stored content, whole. */
    const readAll = (key: string): Effect.Effect<Uint8Array, PlatformError> => contents.readAll(key)

    /** Removes a stored content; one already gone is not an error. */
    const remove = (key: string): Effect.Effect<void, PlatformError> => contents.remove(key)

    /** Readiness of the object store; `None` for the local directory (the database's volume's business). */
    const check = contents.check

    return { write, read, readAll, readText, remove, check } as const
  })
}) {}
