/** `npm run migrate`: applies pending migrations to the configured database and exits. */
import { NodeContext, NodeRuntime } from "@effect/platform-node"
import { Effect, Layer } from "effect"
import { AppConfig, environment } from "../Config.js"
import { LoggingLive } from "../Logging.js"
import { runMigrations } from "../Migrations.js"
import { describeStartupFailure } from "../Server.js"
import { SqlLive } from "../Sql.js"

runMigrations.pipe(
  Effect.tap((applied) =>
    Effect.logInfo(applied.length === 0 ? "Database is up to date" : `Applied ${applied.length} migration(s)`)
  ),
  Effect.provide(SqlLive.pipe(Layer.provideMerge(LoggingLive), Layer.provide(AppConfig.Default))),
  Effect.provide(NodeContext.layer),
  Effect.withConfigProvider(environment()),
  Effect.tapErrorCause((cause) => Effect.sync(() => process.stderr.write(`${describeStartupFailure(cause)}\n`))),
  NodeRuntime.runMain({ disableErrorReporting: true, disablePrettyLogger: true })
)
