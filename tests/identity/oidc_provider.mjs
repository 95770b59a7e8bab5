// A real OpenID Connect provider for the tests: the `oidc-provider` package of the npm
// registry, configured from the JSON file named by the first argument (tests/identity/idp.py
// writes it): issuer, port, clients, signing keys (JWKS with private parts) and users with
// their claims. Sign-in uses the package's development interactions: a login form that
// accepts any password for a known user, then a consent form.
import { readFileSync } from "node:fs";
import Provider from "oidc-provider";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));

const provider = new Provider(config.issuer, {
  clients: config.clients,
  jwks: config.jwks,
  claims: {
    openid: ["sub"],
    profile: ["name"],
    email: ["email"],
    roles: ["roles", "municipality"],
  },
  scopes: ["openid", "profile", "email", "roles"],
  // Put the scopes' claims in the ID token itself (the API reads no userinfo).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  ttl: { IdToken: config.idTokenTtlSeconds ?? 3600 },
  cookies: { keys: ["kommune-iot-test-cookie-key"] },
  async findAccount(ctx, id) {
    const user = config.users[id];
    if (!user) return undefined;
    return { accountId: id, async claims() { return { sub: id, ...user }; } };
  },
});

const server = provider.listen(config.port, "127.0.0.1", () => {
  console.log(`listening ${config.issuer}`);
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
