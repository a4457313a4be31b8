/**
 * `npm run cli -- <command>`: operator tasks on the configured database.
 *
 *   rotate-keys                       re-encrypt every stored credential, and re-seal every file's
 *                                     data key, under the first key of ENCRYPTION_KEYS (and in the
 *                                     current format, which binds each to its use)
 *   encrypt-files                     encrypt the files' contents stored as they are (uploaded
 *                                     before encryption at rest, or with FILES_ENCRYPTION=off)
 *   backup <directory>                the embedded database (a consistent copy, taken while the
 *                                     server runs), DATA_DIR/secrets.json and the files' contents,
 *                                     into a new directory below <directory>; with DATABASE_URL
 *                                     PostgreSQL is backed up with its own tools instead
 *   reset-password <login> [--stdin]  set an account's password (email address or username) and end
 *                                     its sessions: the way back in when no administrator can sign
 *                                     in. A new random password is printed, or with `--stdin` the
 *                                     first line of the standard input is the password.
 */
import { FileSystem, Path } from "@effect/platform"
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { SqlClient } from "@effect/sql"
import { Cause, Console, Effect, Layer, Option, Redacted, Schema } from "effect"
import * as Crypto from "node:crypto"
import { latestMigrationId } from "../../migrations/index.js"
import { AuditLog } from "../Audit.js"
import { AuditRepo } from "../Audit/AuditRepo.js"
import { Password } from "../Auth/Api.js"
import { Passwords } from "../Auth/Passwords.js"
import { SessionsRepo } from "../Auth/SessionsRepo.js"
import { AppConfig, environment } from "../Config.js"
import { encryptStoredContents } from "../Files/EncryptContents.js"
import { FilesRepo } from "../Files/FilesRepo.js"
import { FileStorage } from "../Files/Storage.js"
import { LoggingLive } from "../Logging.js"
import { appliedMigrationId, MigrationsError } from "../Migrations.js"
import { CredentialCipher } from "../Models/CredentialCipher.js"
import { rotateKeys as rotateAllKeys } from "../Models/KeyRotation.js"
import { ProvidersRepo } from "../Models/ProvidersRepo.js"
import { Secrets } from "../Secrets.js"
import { describeStartupFailure } from "../Server.js"
import { SqlLive } from "../Sql.js"
import { resetPassword as resetPasswordOf } from "../Users/PasswordReset.js"
import { UsersRepo } from "../Users/UsersRepo.js"

const usage =
  "Usage: npm run cli -- rotate-keys | encrypt-files | backup <directory> | reset-password <email or username> [--stdin]"

/** Refuses to touch a database whose schema is behind this build (`npm run migrate` first). */
const requireMigrated = Effect.flatMap(
  appliedMigrationId,
  (applied) =>
    Option.getOrElse(applied, () => 0) >= latestMigrationId
      ? Effect.void
      : Effect.fail(
        new MigrationsError({ message: "The database schema is not up to date: run `npm run migrate` first" })
      )
)

const rotateKeys = Effect.zipRight(requireMigrated, rotateAllKeys()).pipe(
  Effect.tap((report) =>
    Effect.sync(() =>
      process.stdout.write(
        `Re-encrypted ${report.credentials.reencrypted} credential(s) under key "${report.keyId}"; ` +
          `${report.credentials.alreadyCurrent} already under it.\n` +
          `Re-sealed ${report.fileKeys.resealed} file data key(s) under key "${report.keyId}"; ` +
          `${report.fileKeys.alreadyCurrent} already under it (the files' contents are untouched).\n` +
          `Upgraded ${report.credentials.upgraded} credential(s) and ${report.fileKeys.upgraded} file data key(s) ` +
          "sealed in the format from before values were bound to their use.\n"
      )
    )
  ),
  Effect.provide(
    Layer.mergeAll(ProvidersRepo.Default, FilesRepo.Default, CredentialCipher.Default).pipe(
      Layer.provideMerge(SqlLive),
      Layer.provide(Secrets.Default)
    )
  )
)

/** Encrypts the contents stored as they are; exits with 1 when some could not be (they are logged). */
const encryptFiles = Effect.zipRight(requireMigrated, encryptStoredContents).pipe(
  Effect.tap((report) =>
    Effect.sync(() => {
      process.stdout.write(
        `Encrypted ${report.encrypted} file content(s) under key "${report.keyId}"; ` +
          `${report.alreadyEncrypted} already encrypted; ${report.skipped} deleted meanwhile; ` +
          `${report.failed} could not be encrypted.\n` +
          (report.leftBehind > 0
            ? `${report.leftBehind} plaintext content(s) could not be removed: their storage keys are in the log.\n`
            : "")
      )
      if (report.failed > 0 || report.leftBehind > 0) process.exitCode = 1
    })
  ),
  Effect.provide(
    FileStorage.Default.pipe(
      Layer.provideMerge(Layer.mergeAll(FilesRepo.Default, CredentialCipher.Default)),
      Layer.provideMerge(SqlLive),
      Layer.provide(Secrets.Default)
    )
  )
)

/** The first line of the standard input. */
const firstLineOfStdin = Effect.promise(async () => {
  let text = ""
  for await (const chunk of process.stdin) {
    text += String(chunk)
    if (text.includes("\n")) break
  }
  return text.split(/\r?\n/)[0] ?? ""
})

class CliError extends Schema.TaggedError<CliError>()("CliError", { message: Schema.String }) {}

const resetPassword = (login: string | undefined, fromStdin: boolean) =>
  Effect.gen(function*() {
    if (login === undefined) return yield* new CliError({ message: usage })
    yield* requireMigrated
    const user = yield* Effect.flatMap(UsersRepo, (users) => users.findByLogin(login.trim()))
    if (Option.isNone(user)) return yield* new CliError({ message: `No account "${login}"` })
    const chosen = fromStdin ? yield* firstLineOfStdin : Crypto.randomBytes(18).toString("base64url")
    const password = yield* Schema.decode(Password)(chosen).pipe(
      Effect.mapError((error) => new CliError({ message: `The password is refused: ${error.message}` }))
    )
    yield* resetPasswordOf(user.value, password, { type: "system", id: "cli" }).pipe(
      Effect.catchTag(
        "ValidationError",
        (error) => new CliError({ message: error.issues[0]?.message ?? error.message })
      )
    )
    yield* Console.log(
      fromStdin
        ? `The password of ${user.value.username} is set; their sessions are ended.`
        : `The password of ${user.value.username} is now: ${Redacted.value(password)}\n` +
          "Their sessions are ended; they can change it once signed in (POST /api/v1/auth/password)."
    )
  }).pipe(
    Effect.provide(
      Layer.mergeAll(
        UsersRepo.Default,
        SessionsRepo.Default,
        Passwords.Default,
        AuditLog.Default.pipe(Layer.provide(AuditRepo.Default))
      ).pipe(Layer.provideMerge(SqlLive), Layer.provide(Secrets.Default))
    )
  )

/**
 * A backup of the embedded mode's state in a new directory below `into`: `webplus.db` (SQLite's
 * `VACUUM INTO`, a consistent copy while the server runs), `secrets.json` (without it the copy's
 * tokens and provider credentials cannot be read) and `files/` (the uploads' contents, written once
 * and never changed; half-written ones left out; encrypted ones open only with the same
 * `ENCRYPTION_KEYS`). Prints the directory.
 */
const backup = (into: string | undefined) =>
  Effect.gen(function*() {
    if (into === undefined) return yield* new CliError({ message: usage })
    const { dataDir, database, files } = yield* AppConfig
    if (Option.isSome(database.url)) {
      return yield* new CliError({
        message: "The database is PostgreSQL (DATABASE_URL): back it up with pg_dump, and FILES_DIR with it"
      })
    }
    const fs = yield* FileSystem.FileSystem
    const path = yield* Path.Path
    const stamp = new Date().toISOString().replace(/[:.]/g, "-")
    const target = path.resolve(into, `webplus-backup-${stamp}`)
    yield* fs.makeDirectory(target, { recursive: true })
    yield* requireMigrated
    const sql = yield* SqlClient.SqlClient
    yield* sql`VACUUM INTO ${path.join(target, "webplus.db")}`
    const secrets = path.join(dataDir, "secrets.json")
    if (yield* fs.exists(secrets)) {
      yield* fs.copyFile(secrets, path.join(target, "secrets.json"))
      yield* fs.chmod(path.join(target, "secrets.json"), 0o600)
    }
    let copied = 0
    if (yield* fs.exists(files.dir)) {
      for (const entry of yield* fs.readDirectory(files.dir, { recursive: true })) {
        const from = path.join(files.dir, entry)
        // Uploads being written live under tmp/ until they are whole.
        if (entry === "tmp" || entry.startsWith(`tmp${path.sep}`)) continue
        if ((yield* fs.stat(from)).type !== "File") continue
        yield* fs.makeDirectory(path.dirname(path.join(target, "files", entry)), { recursive: true })
        yield* fs.copyFile(from, path.join(target, "files", entry))
        copied++
      }
    }
    const withSecrets = yield* fs.exists(path.join(target, "secrets.json"))
    yield* Console.log(
      `Backed up to ${target}: the database, ${copied} file content(s)${withSecrets ? ", secrets.json" : ""}.\n` +
        "To restore: stop the server; put webplus.db and secrets.json in DATA_DIR, and files/ as FILES_DIR.\n" +
        "The credentials and the encrypted file contents open only with the same ENCRYPTION_KEYS " +
        "(in secrets.json, unless set in the environment: keep them with the backup, apart from it)."
    )
  }).pipe(
    Effect.mapError((error) =>
      error instanceof CliError ? error : new CliError({ message: `The backup failed: ${String(error)}` })
    ),
    Effect.provide(Layer.mergeAll(SqlLive, NodeContext.layer).pipe(Layer.provide(Secrets.Default)))
  )

const [command, ...rest] = process.argv.slice(2)

const program: Effect.Effect<unknown, unknown, AppConfig | NodeContext.NodeContext> = command === "rotate-keys"
  ? rotateKeys
  : command === "encrypt-files"
  ? encryptFiles
  : command === "backup"
  ? backup(rest[0])
  : command === "reset-password"
  ? resetPassword(rest.find((arg) => !arg.startsWith("--")), rest.includes("--stdin"))
  : Effect.sync(() => {
    process.stderr.write(`${command ? `Unknown command "${command}". ` : ""}${usage}\n`)
    process.exitCode = 2
  })

program.pipe(
  Effect.provide(LoggingLive),
  Effect.provide(AppConfig.Default),
  Effect.provide(NodeContext.layer),
  Effect.withConfigProvider(environment()),
  Effect.tapErrorCause((cause) =>
    Effect.sync(() => {
      // A defect here is a credential that does not open: say so without the stack (no secrets in it either).
      const defect = Cause.dieOption(cause)
      const failure = Cause.failureOption(cause)
      process.stderr.write(
        defect._tag === "Some" && defect.value instanceof Error
          ? `${defect.value.message}\n`
          : failure._tag === "Some" && failure.value instanceof CliError
          ? `${failure.value.message}\n`
          : `${describeStartupFailure(cause)}\n`
      )
    })
  ),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
)
