//! The cold-start baseline for `scripts/bench`: the smallest function the same runtimes
//! allow, built with the same release profile as the routes. With `AWS_LAMBDA_RUNTIME_API`
//! set it is a `lambda_http` hello world; otherwise a `vercel_runtime` one on
//! `127.0.0.1:$VERCEL_DEV_PORT`, like every route. Never deployed.

use lambda_http::{Body, Error, Request, Response, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        lambda_http::run(service_fn(|_req: Request| async {
            Ok::<_, Error>(Response::new(Body::from("hello")))
        }))
        .await
    } else {
        vercel_runtime::run(vercel_runtime::service_fn(
            |_req: vercel_runtime::Request| async {
                Ok::<_, vercel_runtime::Error>(Response::new(vercel_runtime::ResponseBody::from(
                    "hello",
                )))
            },
        ))
        .await
    }
}
