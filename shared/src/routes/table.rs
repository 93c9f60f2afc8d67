//! The route table, defined once: each function's binary, contract path, methods and Vercel
//! `maxDuration`. `vercel.json`, `template.yaml` and the dev server are checked against it.

/// One deployed function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The binary (`api/<bin>.rs`), also the Lambda `BuildProperties.Binary` and the
    /// Vercel function `api/<bin>.rs`.
    pub bin: &'static str,
    /// The contract's path.
    pub path: &'static str,
    /// The methods it answers; any other gets 405 with these in `Allow`.
    pub methods: &'static [&'static str],
    /// Vercel's `maxDuration` and the Lambda `Timeout`, in seconds.
    pub max_duration_seconds: u32,
}

impl Route {
    /// Vercel's path for the function file, `/api/<bin>`.
    pub fn file_path(&self) -> String {
        format!("/api/{}", self.bin)
    }
}

/// Every route, in the contract's order.
pub const ROUTES: [Route; 6] = [
    Route {
        bin: "train",
        path: "/api/replicate/webhooks/train",
        methods: &["POST"],
        max_duration_seconds: 300,
    },
    Route {
        bin: "predict",
        path: "/api/replicate/webhooks/predict",
        methods: &["POST"],
        max_duration_seconds: 120,
    },
    Route {
        bin: "unified",
        path: "/api/webhooks/replicate",
        methods: &["POST"],
        max_duration_seconds: 300,
    },
    Route {
        bin: "completed",
        path: "/api/webhooks/replicate/completed",
        methods: &["POST"],
        max_duration_seconds: 300,
    },
    Route {
        bin: "health",
        path: "/api/health",
        methods: &["GET", "HEAD"],
        max_duration_seconds: 15,
    },
    Route {
        bin: "reconcile",
        path: "/api/cron/reconcile",
        methods: &["GET", "POST"],
        max_duration_seconds: 300,
    },
];

/// The route with this binary name.
pub fn by_bin(bin: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.bin == bin)
}

/// The time limit of the route `bin`, its `maxDuration`; for a name not in the table, 300 s,
/// the default of every Vercel plan.
pub fn max_duration(bin: &str) -> std::time::Duration {
    std::time::Duration::from_secs(by_bin(bin).map_or(300, |r| u64::from(r.max_duration_seconds)))
}

/// The route served at `path`: its contract path or its file path (`/api/<bin>`), with or
/// without a trailing slash.
pub fn by_path(path: &str) -> Option<&'static Route> {
    let path = path.trim_end_matches('/');
    ROUTES
        .iter()
        .find(|r| r.path == path || path.strip_prefix("/api/").is_some_and(|bin| bin == r.bin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_binaries_are_unique_and_found() {
        for (i, route) in ROUTES.iter().enumerate() {
            assert!(
                ROUTES[..i]
                    .iter()
                    .all(|r| r.bin != route.bin && r.path != route.path)
            );
            assert_eq!(by_bin(route.bin), Some(route));
            assert_eq!(by_path(route.path), Some(route));
            assert_eq!(by_path(&format!("{}/", route.path)), Some(route));
            assert_eq!(by_path(&route.file_path()), Some(route));
        }
        assert_eq!(by_path("/api/replicate/webhooks"), None);
        assert_eq!(by_path("/api/nothing"), None);
        assert_eq!(by_bin("dev"), None);
    }
}
