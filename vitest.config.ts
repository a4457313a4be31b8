import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Test files share one machine's PostgreSQL; each creates its own databases.
    pool: "forks",
    reporters: ["default"]
  }
})
