import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Test files share one machine's PostgreSQL; each creates (and drops) its own databases.
    pool: "forks",
    // In CI a JSON report is kept too, from which .ci/run prints its closing summary line.
    reporters: process.env.CI ? ["default", "json"] : ["default"],
    outputFile: { json: ".ci/test-results.json" }
  }
})
