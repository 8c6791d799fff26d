// /api/docs: Swagger UI (vendored, frontend/vendor/swagger-ui) over /api/openapi.json.
// Started from this file rather than an inline script, so the page runs under script-src 'self'.
// Sign in with "Authorize" (paste an access token), or run POST /api/auth/verify-otp or /api/auth/login
// with "Try it out": the token they answer is put into "Authorize" for the calls that follow.
// Like the product's pages, the token lives in this tab's memory only (persistAuthorization off).

const SIGN_IN = /\/api\/auth\/(verify-otp|login|refresh)$/;

const ui = window.SwaggerUIBundle({
  url: '/api/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  displayOperationId: false,
  displayRequestDuration: true,
  filter: true,
  persistAuthorization: false,
  tryItOutEnabled: false,
  validatorUrl: null, // never send the document to swagger.io's validator
  presets: [window.SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
  responseInterceptor: (res) => {
    const path = new URL(res.url, window.location.href).pathname;
    if (res.ok && SIGN_IN.test(path) && typeof res.body?.access_token === 'string') {
      ui.preauthorizeApiKey('bearer', res.body.access_token);
    }
    return res;
  },
});
