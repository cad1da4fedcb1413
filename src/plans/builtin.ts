import { validatePlans, type Plans } from './plan-file.js';

/**
 * The agent platform: the plans every installation had before plan files existed, and the ones in
 * force when no plan file is given (catalog migration 0002 seeds the same tiers, 0020 the metrics and
 * features). examples/plans/agent-platform.json is this same document.
 */
export const BUILTIN_PLANS_DOCUMENT = {
  metrics: [
    {
      name: "agents",
      kind: "count",
      unit: "agents",
      quota: "max_agents",
      description: "Agents the tenant has defined"
    },
    {
      name: "users",
      kind: "count",
      unit: "users",
      quota: "max_users",
      description: "Members of the tenant"
    },
    {
      name: "api_calls",
      kind: "window",
      window: "minute",
      unit: "calls",
      quota: "api_calls_per_minute",
      description: "API calls per minute (also the rate limit)"
    },
    {
      name: "llm_tokens",
      kind: "window",
      window: "day",
      unit: "tokens",
      quota: "llm_tokens_per_day",
      description: "LLM tokens per day"
    },
    {
      name: "concurrent_agents",
      kind: "lease",
      ttlSeconds: 300,
      unit: "agents",
      quota: "max_concurrent_agents",
      description: "Agents running at once"
    },
    {
      name: "storage_bytes",
      kind: "gauge",
      source: "storage",
      unit: "GB",
      scale: 1000000000,
      quota: "storage_gb",
      description: "Storage measured from PostgreSQL, in bytes; limits in GB"
    }
  ],
  features: [
    {
      name: "api_access",
      description: "Programmatic access through tenant API keys"
    },
    {
      name: "sql_access",
      description: "The tenant SQL endpoint (one statement inside the tenant's walls)"
    },
    {
      name: "audit_export",
      description: "Export of the tenant's audit log"
    },
    {
      name: "custom_domains",
      description: "The tenant's own domains in front of the app"
    },
    {
      name: "sso",
      description: "Single sign-on for the tenant's members"
    },
    {
      name: "dedicated_database",
      description: "A database of the tenant's own"
    }
  ],
  tiers: [
    {
      name: "free",
      default: true,
      limits: {
        agents: 10,
        users: 1,
        api_calls: 100,
        llm_tokens: 10000,
        concurrent_agents: 2,
        storage_bytes: 1
      },
      features: [],
      rateLimit: 100,
      retentionDays: 30
    },
    {
      name: "starter",
      limits: {
        agents: 100,
        users: 10,
        api_calls: 1000,
        llm_tokens: 100000,
        concurrent_agents: 10,
        storage_bytes: 10
      },
      features: [
        "api_access"
      ],
      rateLimit: 1000,
      retentionDays: 90
    },
    {
      name: "professional",
      limits: {
        agents: 1000,
        users: 100,
        api_calls: 10000,
        llm_tokens: 1000000,
        concurrent_agents: 50,
        storage_bytes: 100
      },
      features: [
        "api_access",
        "sql_access",
        "audit_export",
        "custom_domains"
      ],
      rateLimit: 10000,
      retentionDays: 365
    },
    {
      name: "enterprise",
      limits: {
        agents: 10000,
        users: 1000,
        api_calls: 100000,
        llm_tokens: 10000000,
        concurrent_agents: 500,
        storage_bytes: 10000
      },
      features: [
        "api_access",
        "sql_access",
        "audit_export",
        "custom_domains",
        "sso",
        "dedicated_database"
      ],
      rateLimit: 100000,
      retentionDays: 1825
    },
    {
      name: "custom",
      limits: {
        agents: 50000,
        users: 10000,
        api_calls: 100000,
        llm_tokens: 100000000,
        concurrent_agents: 1000,
        storage_bytes: 100000
      },
      features: [
        "api_access",
        "sql_access",
        "audit_export",
        "custom_domains",
        "sso",
        "dedicated_database"
      ],
      rateLimit: 100000,
      retentionDays: 3650
    }
  ]
} as const;

export const BUILTIN_PLANS: Plans = validatePlans(JSON.parse(JSON.stringify(BUILTIN_PLANS_DOCUMENT)));
