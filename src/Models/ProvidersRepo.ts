import { Model, SqlClient, SqlSchema } from "@effect/sql"
import { Effect, Schema } from "effect"
import { type ProviderId } from "../Domain/Ids.js"
import { Provider, ProviderKind } from "../Domain/Model.js"
import { storedNow, writeCounter } from "../Sql.js"

export class ProvidersRepo extends Effect.Service<ProvidersRepo>()("Models/ProvidersRepo", {
  effect: Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const repo = yield* Model.makeRepository(Provider, {
      tableName: "providers",
      spanPrefix: "ProvidersRepo",
      idColumn: "id"
    })

    const list = SqlSchema.findAll({
      Request: Schema.Void,
      Result: Provider,
      execute: () => sql`SELECT * FROM providers ORDER BY name, id`
    })

    const findByName = SqlSchema.findOne({
      Request: Schema.String,
      Result: Provider,
      execute: (name) => sql`SELECT * FROM providers WHERE name = ${name}`
    })

    // The built-in providers (`builtin:` URLs) are the environment's too, but not of a declared kind.
    const findFromEnvironment = SqlSchema.findOne({
      Request: ProviderKind,
      Result: Provider,
      execute: (kind) =>
        sql`SELECT * FROM providers
          WHERE source = 'environment' AND kind = ${kind} AND base_url NOT LIKE 'builtin:%'`
    })

    const findByBaseUrl = SqlSchema.findOne({
      Request: Schema.String,
      Result: Provider,
      execute: (baseUrl) => sql`SELECT * FROM providers WHERE base_url = ${baseUrl}`
    })

    const withCredential = SqlSchema.findAll({
      Request: Schema.Void,
      Result: Provider,
      execute: () => sql`SELECT * FROM providers WHERE credential_ciphertext IS NOT NULL ORDER BY id`
    })

    /** The credential sealed again, if it is still `previous` (not changed meanwhile): whether it was. */
    const setCredential = (id: ProviderId, previous: string, ciphertext: string, keyId: string) =>
      Effect.flatMap(
        storedNow,
        (now) =>
          Effect.map(
            sql`UPDATE providers SET ${
              sql.update({ credentialCiphertext: ciphertext, credentialKeyId: keyId, updatedAt: now })
            } WHERE id = ${id} AND credential_ciphertext = ${previous} RETURNING id`,
            (rows) => rows.length > 0
          )
      )

    // The registry keeps resolved models for a while: the count tells it when one may be out of date.
    const { counted, writes } = writeCounter()

    return {
      writes,
      insert: (provider: typeof Provider.insert.Type) => counted(Effect.orDie(repo.insert(provider))),
      update: (provider: typeof Provider.update.Type) => counted(Effect.orDie(repo.update(provider))),
      findById: (id: ProviderId) => Effect.orDie(repo.findById(id)),
      delete: (id: ProviderId) => counted(Effect.orDie(repo.delete(id))),
      list: Effect.orDie(list()),
      findByName: (name: string) => Effect.orDie(findByName(name)),
      findFromEnvironment: (kind: ProviderKind) => Effect.orDie(findFromEnvironment(kind)),
      findByBaseUrl: (baseUrl: string) => Effect.orDie(findByBaseUrl(baseUrl)),
      withCredential: Effect.orDie(withCredential()),
      setCredential: (id: ProviderId, previous: string, ciphertext: string, keyId: string) =>
        counted(Effect.orDie(setCredential(id, previous, ciphertext, keyId)))
    } as const
  })
}) {}
