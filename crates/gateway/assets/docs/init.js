// Swagger UI on the gateway's own OpenAPI document. A file of its own: the page's Content-Security-Policy
// allows no inline script.
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // No badge fetched from validator.swagger.io: nothing leaves the gateway's origin.
  validatorUrl: null,
});
