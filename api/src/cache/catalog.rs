//! Catalog products as the API shows them ([`Product`]), and the listing of
//! `GET /api/products` rendered once per load ([`Catalog`]), which the stock caches keep.

use entity::catalog::{self, ProductView};
use poem_openapi::Object;

use crate::cache::rendered::RenderedJson;

/// The catalog listing as `GET /api/products` answers it, rendered once per load for each of
/// its three filters.
pub struct Catalog {
    all: RenderedJson<Vec<Product>>,
    in_stock: RenderedJson<Vec<Product>>,
    sold_out: RenderedJson<Vec<Product>>,
}

impl Catalog {
    pub fn render(products: Vec<ProductView>) -> Self {
        let (available, gone): (Vec<_>, Vec<_>) = products
            .iter()
            .partition(|p| catalog::is_available(&p.product));
        let render = |views: Vec<&ProductView>| {
            let listing: Vec<Product> = views.into_iter().cloned().map(Product::from).collect();
            RenderedJson::render(&listing)
        };
        Self {
            all: render(products.iter().collect()),
            in_stock: render(available),
            sold_out: render(gone),
        }
    }

    /// Every product, or only those that can (`Some(true)`) or cannot be bought now.
    pub fn listing(&self, in_stock: Option<bool>) -> &RenderedJson<Vec<Product>> {
        match in_stock {
            None => &self.all,
            Some(true) => &self.in_stock,
            Some(false) => &self.sold_out,
        }
    }
}

/// A catalog product.
#[derive(Object)]
#[oai(rename_all = "camelCase", skip_serializing_if_is_none)]
pub struct Product {
    /// Use it for `notify-me`.
    id: i64,
    /// URL name; `GET /api/products/{slug}` works as well as the id.
    slug: String,
    name: String,
    /// Plain text, possibly empty.
    description: String,
    /// Price in the currency's minor unit (cents).
    price_cents: i64,
    /// ISO 4217 code.
    currency: String,
    /// Absolute URL of a product photo, when there is one.
    image_url: Option<String>,
    /// Can be bought now: marked in stock, and its quantity (when tracked) above zero.
    in_stock: bool,
    /// Units left, when the store tracks them.
    stock_quantity: Option<i32>,
    /// Confirmed "notify me" subscribers waiting for the next restock.
    waiting_count: i64,
}

impl From<ProductView> for Product {
    fn from(view: ProductView) -> Self {
        let p = view.product;
        Self {
            in_stock: catalog::is_available(&p),
            id: p.id,
            slug: p.slug,
            name: p.name,
            description: p.description,
            price_cents: p.price_cents,
            currency: p.currency,
            image_url: p.image_url,
            stock_quantity: p.stock_quantity,
            waiting_count: view.waiting_count,
        }
    }
}
