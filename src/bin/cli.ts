/**
 * `npm run cli -- <command>`: operator tasks on the configured database.
 *
 *   rotate-keys   re-encrypt every stored credential under the first key of ENCRYPTION_KEYS
 */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Cause, Effect, Layer, Option } from "effect"
import { latestMigrationId } from "../../migrations/index.js"
import { AppConfig, environment } from "../Config.js"
import { LoggingLive } from "../Logging.js"
import { appliedMigrationId, MigrationsError } from "../Migrations.js"
import { CredentialCipher } from "../Models/CredentialCipher.js"
import { rotateCredentials } from "../Models/KeyRotation.js"
import { ProvidersRepo } from "../Models/ProvidersRepo.js"
import { Secrets } from "../Secrets.js"
import { describeStartupFailure } from "../Server.js"
import { SqlLive } from "../Sql.js"

const usage = "Usage: npm run cli -- rotate-keys"

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

const command = process.argv[2]

const program = command === "rotate-keys"
  ? rotateKeys
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
      process.stderr.write(
        defect._tag === "Some" && defect.value instanceof Error
          ? `${defect.value.message}\n`
          : `${describeStartupFailure(cause)}\n`
      )
    })
  ),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
)
