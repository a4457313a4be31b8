/**
 * The server's own secrets: the JWT signing secret and the keys that encrypt
 * credentials at rest.
 *
 * In production both come from the environment and are required. Anywhere
 * else, a value missing from the environment is generated once and kept in
 * `DATA_DIR/secrets.json` (mode 0600), so the embedded default needs no setup
 * and restarts keep the same secrets.
 */
import { FileSystem, Path } from "@effect/platform"
import type { PlatformError } from "@effect/platform/Error"
import { Config, ConfigError, Effect, Either, Option, Redacted, Schema } from "effect"
import * as Crypto from "node:crypto"
import { AppConfig } from "./Config.js"

export interface EncryptionKey {
  readonly id: string
  readonly key: Redacted.Redacted<Uint8Array>
}

const keyIdPattern = /^[A-Za-z0-9_-]{1,32}$/

/** Parses `ENCRYPTION_KEYS`: `id:base64key,id2:base64key`, each key 32 bytes; the first one encrypts. */
export const parseEncryptionKeys = (raw: string): Either.Either<ReadonlyArray<EncryptionKey>, string> => {
  const entries = raw.split(",").map((entry) => entry.trim()).filter((entry) => entry.length > 0)
  if (entries.length === 0) return Either.left("Expected at least one key as keyId:base64")
  const keys: Array<EncryptionKey> = []
  for (const entry of entries) {
    const separator = entry.indexOf(":")
    const id = separator > 0 ? entry.slice(0, separator) : ""
    if (!keyIdPattern.test(id)) {
      return Either.left("Each key must be keyId:base64, with a key id of letters, digits, - or _")
    }
    const bytes = Buffer.from(entry.slice(separator + 1), "base64")
    if (bytes.length !== 32) return Either.left(`Key "${id}" must be 32 bytes of base64 (AES-256)`)
    if (keys.some((key) => key.id === id)) return Either.left(`Key id "${id}" appears twice`)
    keys.push({ id, key: Redacted.make(new Uint8Array(bytes)) })
  }
  return Either.right(keys)
}

const jwtSecretConfig = Config.string("JWT_SECRET").pipe(
  Config.validate({ message: "Expected at least 32 characters", validation: (secret) => secret.length >= 32 }),
  Config.map(Redacted.make)
)

const encryptionKeysConfig = Config.string("ENCRYPTION_KEYS").pipe(
  Config.mapOrFail((raw) => Either.mapLeft(parseEncryptionKeys(raw), (message) => ConfigError.InvalidData([], message)))
)

const StoredSecrets = Schema.parseJson(Schema.Struct({ jwtSecret: Schema.String, encryptionKeys: Schema.String }))

const generateSecrets = () => ({
  jwtSecret: Crypto.randomBytes(48).toString("base64url"),
  encryptionKeys: `k${Date.now().toString(36)}:${Crypto.randomBytes(32).toString("base64")}`
})

export class Secrets extends Effect.Service<Secrets>()("Secrets", {
  effect: Effect.gen(function*() {
    const config = yield* AppConfig
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const fromEnv = {
      jwtSecret: yield* Config.option(jwtSecretConfig),
      encryptionKeys: yield* Config.option(encryptionKeysConfig)
    }
    if (config.nodeEnv === "production") {
      return {
        jwtSecret: yield* Option.match(fromEnv.jwtSecret, {
          onNone: () => Effect.fail(ConfigError.MissingData(["JWT_SECRET"], "Required in production")),
          onSome: Effect.succeed
        }),
        encryptionKeys: yield* Option.match(fromEnv.encryptionKeys, {
          onNone: () => Effect.fail(ConfigError.MissingData(["ENCRYPTION_KEYS"], "Required in production")),
          onSome: Effect.succeed
        })
      } as const
    }
    if (Option.isSome(fromEnv.jwtSecret) && Option.isSome(fromEnv.encryptionKeys)) {
      return { jwtSecret: fromEnv.jwtSecret.value, encryptionKeys: fromEnv.encryptionKeys.value } as const
    }

    // Generated once: the first instance to link its file wins, whole; the others read that one.
    const file = path.join(config.dataDir, "secrets.json")
    const unwritable = (error: PlatformError) =>
      ConfigError.InvalidData(["DATA_DIR"], `Cannot keep secrets in ${config.dataDir}: ${error.message}`)
    const temporary = `${file}.${process.pid}.${Crypto.randomUUID()}.tmp`
    const created = yield* Effect.gen(function*() {
      yield* fs.makeDirectory(config.dataDir, { recursive: true })
      yield* fs.writeFileString(temporary, Schema.encodeSync(StoredSecrets)(generateSecrets()), { mode: 0o600 })
      // link(2) refuses to replace an existing file.
      return yield* fs.link(temporary, file).pipe(
        Effect.as(true),
        Effect.catchIf(
          (error) => error._tag === "SystemError" && error.reason === "AlreadyExists",
          () => Effect.succeed(false)
        ),
        Effect.ensuring(Effect.ignore(fs.remove(temporary)))
      )
    }).pipe(Effect.mapError(unwritable))
    if (created) yield* Effect.logInfo("Generated server secrets").pipe(Effect.annotateLogs("file", file))
    const stored = yield* fs.readFileString(file).pipe(
      Effect.flatMap(Schema.decode(StoredSecrets)),
      Effect.mapError(() => ConfigError.InvalidData(["DATA_DIR"], `${file} is unreadable or corrupt`))
    )
    const storedKeys = yield* Either.match(parseEncryptionKeys(stored.encryptionKeys), {
      onLeft: (message) => Effect.fail(ConfigError.InvalidData(["DATA_DIR"], `${file}: ${message}`)),
      onRight: Effect.succeed
    })
    return {
      jwtSecret: Option.getOrElse(fromEnv.jwtSecret, () => Redacted.make(stored.jwtSecret)),
      encryptionKeys: Option.getOrElse(fromEnv.encryptionKeys, () => storedKeys)
    } as const
  })
}) {}
