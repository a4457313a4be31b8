/**
 * Every migration, in order. A migration is forward-only and never edited once
 * released: change the schema by adding the next `NNNN_name` entry.
 */
import initial from "./0001_initial.js"

export const migrations = {
  "0001_initial": initial
} as const

/** The id of the newest migration this build knows: readiness requires it applied. */
export const latestMigrationId = Math.max(...Object.keys(migrations).map((key) => Number(key.slice(0, 4))))
