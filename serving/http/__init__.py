"""The HTTP edge: app factory, one APIRouter module per area, schemas, errors, middleware."""
