/**
 * `npm run cli -- <command>`: operator tasks on the configured database.
 *
 *   rotate-keys                       re-encrypt every stored credential under the first key of
 *                                     ENCRYPTION_KEYS
 *   reset-password <login> [--stdin]  set an account's password (email address or username) and end
 *                                     its sessions: the way back in when no administrator can sign
 *                                     in. A new random password is printed, or with `--stdin` the
 *                                     first line of the standard input is the password.
 */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Console, Effect, Layer, Option, Redacted, Schema } from "effect"
import * as Crypto from "node:crypto"
import { latestMigrationId } from "../../migrations/index.js"
import { AuditLog } from "../Audit.js"
import { AuditRepo } from "../Audit/AuditRepo.js"
import { Password } from "../Auth/Api.js"
import { Passwords } from "../Auth/Passwords.js"
import { SessionsRepo } from "../Auth/SessionsRepo.js"
import { AppConfig, environment } from "../Config.js"
import { LoggingLive } from "../Logging.js"
import { appliedMigrationId, MigrationsError } from "../Migrations.js"
import { CredentialCipher } from "../Models/CredentialCipher.js"
import { rotateCredentials } from "../Models/KeyRotation.js"
import { ProvidersRepo } from "../Models/ProvidersRepo.js"
import { Secrets } from "../Secrets.js"
import { describeStartupFailure } from "../Server.js"
import { SqlLive } from "../Sql.js"
import { resetPassword as resetPasswordOf } from "../Users/PasswordReset.js"
import { UsersRepo } from "../Users/UsersRepo.js"

const usage = "Usage: npm run cli -- rotate-keys | reset-password <email or username> [--stdin]"

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

const rotateKeys = Effect.zipRight(requireMigrated, rotateCredentials).pipe(
  Effect.tap((report) =>
    Effect.sync(() =>
      process.stdout.write(
        `Re-encrypted ${report.reencrypted} credential(s) under key "${report.keyId}"; ` +
          `${report.alreadyCurrent} already under it.\n`
      )
    )
  ),
  Effect.provide(
    Layer.mergeAll(ProvidersRepo.Default, CredentialCipher.Default).pipe(
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

const [command, ...rest] = process.argv.slice(2)

const program: Effect.Effect<unknown, unknown, AppConfig | NodeContext.NodeContext> = command === "rotate-keys"
  ? rotateKeys
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
