//! Which endpoint a request is for (pure, unit-tested natively).

/// Every endpoint of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Live,
    Ready,
    Migrate,
    OutboxJob,
    Events,
    ListProducts,
    CreateProduct,
    GetProduct(String),
    UpdateProduct(String),
    DeleteProduct(String),
    PutDiscount(String),
    DeleteDiscount(String),
    UploadImage(String),
    ListCategories,
    CreateCategory,
    GetCategory(String),
    /// `GET`/`HEAD /images/{key}`; `head` = no body.
    GetImage {
        key: String,
        head: bool,
    },
}

/// Why no endpoint matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    NotFound,
    MethodNotAllowed(&'static [&'static str]),
}

/// Routes `method path` (the public path, as the gateway forwards it).
pub fn route(method: &str, path: &str) -> Result<Endpoint, NoRoute> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let id_ok = |s: &str| !s.is_empty();
    use Endpoint as E;
    let (allowed, endpoint): (&'static [&'static str], Option<Endpoint>) = match segments.as_slice()
    {
        ["health", "live"] => (&["GET"], (method == "GET").then_some(E::Live)),
        ["health", "ready"] => (&["GET"], (method == "GET").then_some(E::Ready)),
        ["internal", "admin", "migrate"] => (&["POST"], (method == "POST").then_some(E::Migrate)),
        ["internal", "jobs", "outbox"] => (&["POST"], (method == "POST").then_some(E::OutboxJob)),
        ["internal", "events"] => (&["GET"], (method == "GET").then_some(E::Events)),
        ["api", "v1", "products"] => (
            &["GET", "POST"],
            match method {
                "GET" => Some(E::ListProducts),
                "POST" => Some(E::CreateProduct),
                _ => None,
            },
        ),
        ["api", "v1", "products", id] if id_ok(id) => {
            let id = (*id).to_owned();
            (
                &["GET", "PATCH", "DELETE"],
                match method {
                    "GET" => Some(E::GetProduct(id)),
                    "PATCH" => Some(E::UpdateProduct(id)),
                    "DELETE" => Some(E::DeleteProduct(id)),
                    _ => None,
                },
            )
        }
        ["api", "v1", "products", id, "discount"] if id_ok(id) => {
            let id = (*id).to_owned();
            (
                &["PUT", "DELETE"],
                match method {
                    "PUT" => Some(E::PutDiscount(id)),
                    "DELETE" => Some(E::DeleteDiscount(id)),
                    _ => None,
                },
            )
        }
        ["api", "v1", "products", id, "images"] if id_ok(id) => (
            &["POST"],
            (method == "POST").then(|| E::UploadImage((*id).to_owned())),
        ),
        ["api", "v1", "categories"] => (
            &["GET", "POST"],
            match method {
                "GET" => Some(E::ListCategories),
                "POST" => Some(E::CreateCategory),
                _ => None,
            },
        ),
        ["api", "v1", "categories", id] if id_ok(id) => (
            &["GET"],
            (method == "GET").then(|| E::GetCategory((*id).to_owned())),
        ),
        ["images", key] if id_ok(key) => (
            &["GET", "HEAD"],
            match method {
                "GET" | "HEAD" => Some(E::GetImage {
                    key: (*key).to_owned(),
                    head: method == "HEAD",
                }),
                _ => None,
            },
        ),
        _ => return Err(NoRoute::NotFound),
    };
    endpoint.ok_or(NoRoute::MethodNotAllowed(allowed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("GET", "/api/v1/products"), Ok(Endpoint::ListProducts));
        assert_eq!(
            route("GET", "/api/v1/products/"),
            Ok(Endpoint::ListProducts)
        );
        assert_eq!(
            route("PATCH", "/api/v1/products/p1"),
            Ok(Endpoint::UpdateProduct("p1".into()))
        );
        assert_eq!(
            route("PUT", "/api/v1/products/p1/discount"),
            Ok(Endpoint::PutDiscount("p1".into()))
        );
        assert_eq!(
            route("POST", "/api/v1/products/p1/images"),
            Ok(Endpoint::UploadImage("p1".into()))
        );
        assert_eq!(
            route("HEAD", "/images/k.png"),
            Ok(Endpoint::GetImage {
                key: "k.png".into(),
                head: true
            })
        );
        assert_eq!(
            route("POST", "/internal/admin/migrate"),
            Ok(Endpoint::Migrate)
        );
        assert_eq!(
            route("PUT", "/api/v1/products"),
            Err(NoRoute::MethodNotAllowed(&["GET", "POST"]))
        );
        assert_eq!(
            route("GET", "/internal/admin/migrate"),
            Err(NoRoute::MethodNotAllowed(&["POST"]))
        );
        assert_eq!(
            route("GET", "/api/v1/products//images"),
            Err(NoRoute::NotFound)
        );
        assert_eq!(route("GET", "/api/v1/productsx"), Err(NoRoute::NotFound));
        assert_eq!(route("GET", "/"), Err(NoRoute::NotFound));
        assert_eq!(
            route("GET", "/api/v1/products/a/b/c"),
            Err(NoRoute::NotFound)
        );
    }
}
