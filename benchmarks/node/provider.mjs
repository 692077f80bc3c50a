// node-oidc-provider 9, the reference of benchmarks/run.py: in-memory store (Maps,
// below), no password hashing, static clients, one RS256 key.
//
//   PORT=5100 BENCH_PORTALS=5 node provider.mjs      (run.py installs and starts it)
//
// Needs `npm install oidc-provider@9` in the folder given as NODE_PATH's parent, or
// run from a folder whose node_modules has it (run.py uses a temporary folder).
//
// Interactions: /bench-login/<uid> signs in account "bench" at once (no form, no
// password), and loadExistingGrant grants openid + offline_access to every portal,
// so a browser that has a session gets a code without any page: the SSO hop.
import { generateKeyPairSync } from 'node:crypto';

import Provider from 'oidc-provider';

const port = Number(process.env.PORT || 5100);
const portals = Number(process.env.BENCH_PORTALS || 5);
const issuer = `http://127.0.0.1:${port}`;
const secret = 'bench-secret-0123456789abcdef0123456789abcdef';
const redirect = 'http://127.0.0.1:9/cb';

// The library's own development adapter is an LRU of 1,000 entries: under load it
// evicts live sessions, grants and tokens (errors that are not the provider's cost).
// This one keeps everything in Maps for the few minutes a run lasts.
const stores = new Map();
const byGrant = new Map();
const byUid = new Map();
class MemoryAdapter {
  constructor(name) {
    this.name = name;
    if (!stores.has(name)) stores.set(name, new Map());
    this.store = stores.get(name);
  }

  async upsert(id, payload) {
    this.store.set(id, payload);
    if (payload.grantId) {
      const ids = byGrant.get(payload.grantId) || [];
      ids.push([this.store, id]);
      byGrant.set(payload.grantId, ids);
    }
    if (payload.uid) byUid.set(`${this.name}:${payload.uid}`, id);
  }

  async find(id) { return this.store.get(id); }

  async findByUid(uid) { return this.store.get(byUid.get(`${this.name}:${uid}`)); }

  async findByUserCode() { return undefined; }

  async consume(id) {
    const payload = this.store.get(id);
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { this.store.delete(id); }

  async revokeByGrantId(grantId) {
    for (const [store, id] of byGrant.get(grantId) || []) store.delete(id);
    byGrant.delete(grantId);
  }
}

const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = { ...privateKey.export({ format: 'jwk' }), alg: 'RS256', use: 'sig', kid: 'bench-rs256' };

const clients = [
  {
    client_id: 'bench-cc',
    client_secret: secret,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: 'api',
  },
];
for (let i = 0; i < portals; i += 1) {
  clients.push({
    client_id: `bench-web-${i}`,
    client_secret: secret,
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [redirect],
  });
}

const provider = new Provider(issuer, {
  adapter: MemoryAdapter,
  clients,
  jwks: { keys: [jwk] },
  cookies: { keys: ['bench-cookie-key-0123456789abcdef'] },
  findAccount: async (ctx, id) => ({ accountId: id, claims: async () => ({ sub: id, name: 'Bench' }) }),
  claims: { openid: ['sub'], profile: ['name'] },
  scopes: ['openid', 'offline_access', 'api'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    // client_credentials tokens as RS256 JWTs (RFC 9068), as the gateway issues them.
    resourceIndicators: {
      enabled: true,
      defaultResource: (ctx) => (ctx.oidc.params?.grant_type === 'client_credentials' ? 'urn:bench:api' : undefined),
      getResourceServerInfo: () => ({ scope: 'api', accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } }),
      useGrantedResource: () => false,
    },
  },
  pkce: { required: () => true },
  issueRefreshToken: async () => true,
  rotateRefreshToken: () => true,
  ttl: {
    AccessToken: 3600,
    ClientCredentials: 3600,
    AuthorizationCode: 60,
    IdToken: 3600,
    RefreshToken: 30 * 24 * 3600,
    Grant: 30 * 24 * 3600,
    Session: 12 * 3600,
    Interaction: 1800,
  },
  interactions: { url: (ctx, interaction) => `/bench-login/${interaction.uid}` },
  // Every portal is pre-approved (first-party): no consent page, as for the gateway's
  // benchmark accounts, whose consent rows run.py writes beforehand.
  loadExistingGrant: async (ctx) => {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope('openid offline_access');
    await grant.save();
    return grant;
  },
});

let accounts = 0;
provider.use(async (ctx, next) => {
  if (ctx.method === 'GET' && ctx.path.startsWith('/bench-login/')) {
    accounts += 1;
    const result = { login: { accountId: `bench-${accounts}` } };
    ctx.status = 303;
    ctx.redirect(await provider.interactionResult(ctx.req, ctx.res, result, { mergeWithLastSubmission: false }));
    return;
  }
  await next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`node-oidc-provider at ${issuer}`);
});
