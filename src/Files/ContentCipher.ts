/**
 * Files' contents encrypted at rest (`FILES_ENCRYPTION`), by envelope encryption: each content has
 * its own random 32-byte data key, sealed under the first key of `ENCRYPTION_KEYS` by
 * `CredentialCipher` and kept in the file's row (`content_key_ciphertext`, `content_key_id`); the
 * content is sealed with its data key as a sequence of segments (the STREAM construction of Hoang,
 * Reyhanitabar, Rogaway and Vizár), so it is written and read with constant memory, and no byte of
 * a segment is given out before that segment is authenticated.
 *
 * The stored bytes:
 *
 *     header    format version (1 byte: 1) ‖ nonce prefix (8 random bytes)
 *     segments  each 64 KiB of the content (the last one 0 to 64 KiB: an empty content is one empty
 *               segment), sealed with AES-256-GCM under the data key: ciphertext ‖ tag (16 bytes)
 *
 * Segment i's nonce is the prefix ‖ i (4 bytes, big-endian); its additional data is the header ‖ i
 * (4 bytes) ‖ whether it is the last (1 byte: 1 or 0) ‖ the storage key (UTF-8). A segment changed,
 * moved or dropped, a content cut after any segment, or a content put under another file's storage
 * key does not open. A content of n bytes is stored in 9 + n + 16 × max(1, ⌈n / 64 KiB⌉) bytes.
 */
import { Data, Effect, Either, Stream } from "effect"
import * as Crypto from "node:crypto"

/** The content's bytes in each sealed segment (the last one may hold fewer). */
export const segmentSize = 64 * 1024
const tagLength = 16
const formatVersion = 1
const prefixLength = 8
const headerLength = 1 + prefixLength
const sealedSegmentSize = segmentSize + tagLength

/** The length of a data key: AES-256. */
export const dataKeyLength = 32

/**
 * A stored content that cannot be opened: changed, cut or moved since it was written, in a format
 * this server does not know, or under a data key that cannot be opened (`keyId` absent from
 * `ENCRYPTION_KEYS`). Nothing past the last authenticated segment is given out.
 */
export class ContentUnreadable extends Data.TaggedError("ContentUnreadable")<{
  readonly reason: string
  /** The key of `ENCRYPTION_KEYS` the content's data key is sealed under. */
  readonly keyId: string
}> {
  override get message() {
    return `A stored file's content cannot be opened: ${this.reason}`
  }
}

/** Bytes received in chunks of any size, taken out in pieces of the sizes asked for. */
class ByteQueue {
  private parts: Array<Uint8Array> = []
  length = 0

  append(chunk: Uint8Array) {
    if (chunk.length === 0) return
    this.parts.push(chunk)
    this.length += chunk.length
  }

  /** The first `count` bytes (at most `length`), as one buffer of their own. */
  take(count: number): Buffer {
    const taken = Buffer.allocUnsafe(count)
    let filled = 0
    while (filled < count) {
      const first = this.parts[0]!
      const wanted = count - filled
      if (first.length <= wanted) {
        taken.set(first, filled)
        filled += first.length
        this.parts.shift()
      } else {
        taken.set(first.subarray(0, wanted), filled)
        this.parts[0] = first.subarray(wanted)
        filled += wanted
      }
    }
    this.length -= count
    return taken
  }
}

const nonceOf = (header: Uint8Array, index: number) => {
  const nonce = Buffer.alloc(12)
  nonce.set(header.subarray(1, headerLength))
  nonce.writeUInt32BE(index, prefixLength)
  return nonce
}

const additionalData = (header: Uint8Array, index: number, last: boolean, storageKey: string) => {
  const position = Buffer.alloc(5)
  position.writeUInt32BE(index, 0)
  position[4] = last ? 1 : 0
  return Buffer.concat([header, position, Buffer.from(storageKey, "utf8")])
}

/** A new random data key. */
export const newDataKey = (): Uint8Array => new Uint8Array(Crypto.randomBytes(dataKeyLength))

/**
 * `content` sealed under `dataKey` for `storageKey`: the header, then one sealed segment per 64 KiB,
 * each given out once the bytes after it show whether it is the last.
 */
export const sealContent = <E, R>(
  content: Stream.Stream<Uint8Array, E, R>,
  dataKey: Uint8Array,
  storageKey: string
): Stream.Stream<Uint8Array, E, R> =>
  Stream.suspend(() => {
    const header = Buffer.alloc(headerLength)
    header[0] = formatVersion
    Crypto.randomFillSync(header, 1, prefixLength)
    const pending = new ByteQueue()
    let index = 0
    const seal = (plaintext: Buffer, last: boolean): Uint8Array => {
      const cipher = Crypto.createCipheriv("aes-256-gcm", dataKey, nonceOf(header, index))
      cipher.setAAD(additionalData(header, index, last, storageKey))
      index += 1
      return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()])
    }
    const sealed = Stream.mapConcat(content, (chunk) => {
      pending.append(chunk)
      const segments: Array<Uint8Array> = []
      // A full segment followed by at least one byte is not the last.
      while (pending.length > segmentSize) segments.push(seal(pending.take(segmentSize), false))
      return segments
    })
    return Stream.make(new Uint8Array(header)).pipe(
      Stream.concat(sealed),
      Stream.concat(Stream.sync(() => seal(pending.take(pending.length), true)))
    )
  })

/**
 * The content `stored` holds, opened with `dataKey` for `storageKey`, segment by segment; fails
 * with `ContentUnreadable` at the first segment that does not authenticate (or when the content
 * ends where no last segment does).
 */
export const openContent = <E, R>(
  stored: Stream.Stream<Uint8Array, E, R>,
  dataKey: Uint8Array,
  storageKey: string,
  keyId: string
): Stream.Stream<Uint8Array, E | ContentUnreadable, R> =>
  Stream.suspend(() => {
    const pending = new ByteQueue()
    let header: Buffer | undefined
    let index = 0
    const unreadable = (reason: string) => new ContentUnreadable({ reason, keyId })
    const open = (sealed: Buffer, last: boolean): Either.Either<Buffer, ContentUnreadable> => {
      if (sealed.length < tagLength) return Either.left(unreadable(`it is cut short in segment ${index}`))
      try {
        const decipher = Crypto.createDecipheriv("aes-256-gcm", dataKey, nonceOf(header!, index))
        decipher.setAAD(additionalData(header!, index, last, storageKey))
        decipher.setAuthTag(sealed.subarray(sealed.length - tagLength))
        const plaintext = Buffer.concat([
          decipher.update(sealed.subarray(0, sealed.length - tagLength)),
          decipher.final()
        ])
        index += 1
        return Either.right(plaintext)
      } catch {
        return Either.left(
          unreadable(`segment ${index}${last ? " (the last)" : ""} does not authenticate: changed, cut or moved`)
        )
      }
    }
    const readHeader = (): Either.Either<void, ContentUnreadable> => {
      header = pending.take(headerLength)
      return header[0] === formatVersion
        ? Either.void
        : Either.left(unreadable(`its format (version ${header[0]}) is not one this server knows`))
    }
    const opened = Stream.mapEffect(stored, (chunk) =>
      Effect.suspend(() => {
        pending.append(chunk)
        if (header === undefined) {
          if (pending.length < headerLength) return Effect.succeed([])
          const read = readHeader()
          if (Either.isLeft(read)) return Effect.fail(read.left)
        }
        const segments: Array<Uint8Array> = []
        while (pending.length > sealedSegmentSize) {
          const segment = open(pending.take(sealedSegmentSize), false)
          if (Either.isLeft(segment)) return Effect.fail(segment.left)
          segments.push(segment.right)
        }
        return Effect.succeed(segments)
      }))
    const last = Effect.suspend(() => {
      if (header === undefined) {
        if (pending.length < headerLength) return Effect.fail(unreadable("it is shorter than its header"))
        const read = readHeader()
        if (Either.isLeft(read)) return Effect.fail(read.left)
      }
      return Effect.map(open(pending.take(pending.length), true), (plaintext) => [plaintext])
    })
    return Stream.concat(Stream.flattenIterables(opened), Stream.fromIterableEffect(last))
  })
