//! A JSON body rendered once and served many times: the listing caches keep their answer as
//! bytes, so a cache hit costs no conversion and no serialisation. The OpenAPI document
//! describes it as the `T` it was rendered from, exactly as `Json<T>`.

use std::marker::PhantomData;

use hyper::body::Bytes;
use poem::{IntoResponse, Response};
use poem_openapi::{
    ApiResponse,
    payload::{Json, Payload},
    registry::{MetaMediaType, MetaResponse, MetaResponses, MetaSchemaRef, Registry},
    types::ToJSON,
};

pub struct RenderedJson<T> {
    body: Bytes,
    rendered_from: PhantomData<fn() -> T>,
}

impl<T: ToJSON> RenderedJson<T> {
    pub fn render(value: &T) -> Self {
        Self {
            body: Bytes::from(value.to_json_string()),
            rendered_from: PhantomData,
        }
    }
}

impl<T> Clone for RenderedJson<T> {
    fn clone(&self) -> Self {
        Self {
            body: self.body.clone(),
            rendered_from: PhantomData,
        }
    }
}

impl<T: ToJSON> Payload for RenderedJson<T> {
    const CONTENT_TYPE: &'static str = Json::<T>::CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: ToJSON> IntoResponse for RenderedJson<T> {
    fn into_response(self) -> Response {
        Response::builder()
            .content_type(Self::CONTENT_TYPE)
            .body(self.body)
    }
}

impl<T: ToJSON> ApiResponse for RenderedJson<T> {
    fn meta() -> MetaResponses {
        MetaResponses {
            responses: vec![MetaResponse {
                description: "",
                status: Some(200),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: Self::CONTENT_TYPE,
                    schema: Self::schema_ref(),
                }],
                headers: vec![],
            }],
        }
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use poem::IntoResponse;

    use super::RenderedJson;

    #[tokio::test]
    async fn it_serves_the_bytes_the_value_serialises_to() {
        let rendered = RenderedJson::render(&vec![1_i64, 2, 3]);
        let response = rendered.clone().into_response();
        assert_eq!(
            response.content_type(),
            Some("application/json; charset=utf-8")
        );
        let body = response.into_body().into_string().await.unwrap_or_default();
        assert_eq!(body, "[1,2,3]");
    }
}
