//! The gRPC transport: requests are parsed into domain values (bad input is
//! `INVALID_ARGUMENT` naming the field), the store answers, and every error
//! becomes a `Status` in one place.

use marketplace_domain::{Id, IdError, Money, MoneyError, Page, Text, TextError, TextRule};
use marketplace_proto::catalog::v1 as proto;
use marketplace_proto::catalog::v1::catalog_service_server::CatalogService;
use marketplace_proto::common::v1::Money as ProtoMoney;
use tonic::{Request, Response, Status};

use crate::domain::{
    MAX_IDS_PER_CALL, Product, ResultWindow, SearchText, SearchTextError, WindowTooDeep,
};
use crate::storage::{ProductStore, StorageError};

/// `marketplace.catalog.v1.CatalogService` over any product store.
#[derive(Debug)]
pub struct CatalogGrpc<S> {
    store: S,
}

impl<S: ProductStore> CatalogGrpc<S> {
    pub fn new(store: S) -> Self {
        Self { store }
    }
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
enum CatalogError {
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    #[error("product {0} does not exist")]
    NotFound(Id),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A request that can never succeed as sent.
#[derive(Debug, thiserror::Error)]
enum InvalidRequest {
    #[error(transparent)]
    Text(#[from] TextError),
    #[error("price is required")]
    PriceMissing,
    #[error("price: {0}")]
    Price(MoneyError),
    #[error("id: {0}")]
    Id(IdError),
    #[error("ids[{index}]: {error}")]
    Ids { index: usize, error: IdError },
    #[error("too many ids: {0} (at most {MAX_IDS_PER_CALL} per call)")]
    TooManyIds(usize),
    #[error(transparent)]
    Window(#[from] WindowTooDeep),
    #[error(transparent)]
    SearchText(#[from] SearchTextError),
}

impl From<CatalogError> for Status {
    fn from(error: CatalogError) -> Self {
        match error {
            CatalogError::Invalid(error) => Status::invalid_argument(error.to_string()),
            CatalogError::NotFound(_) => Status::not_found(error.to_string()),
            CatalogError::Storage(error @ StorageError::Unavailable(_)) => {
                marketplace_grpc::unavailable("the product search backend", &error)
            }
            CatalogError::Storage(error @ StorageError::NotReady(_)) => {
                marketplace_grpc::not_ready("the product search backend", &error)
            }
            CatalogError::Storage(error) => {
                marketplace_grpc::internal("the catalog request", &error)
            }
        }
    }
}

struct NewProduct {
    name: Text,
    description: Text,
    price: Money,
}

impl TryFrom<proto::CreateProductRequest> for NewProduct {
    type Error = InvalidRequest;

    fn try_from(request: proto::CreateProductRequest) -> Result<Self, Self::Error> {
        let price = request.price.ok_or(InvalidRequest::PriceMissing)?;
        Ok(Self {
            name: Text::parse(&request.name, TextRule::PRODUCT_NAME)?,
            description: Text::parse(&request.description, TextRule::PRODUCT_DESCRIPTION)?,
            price: Money::from_minor_units(price.minor_units).map_err(InvalidRequest::Price)?,
        })
    }
}

struct ProductIds(Vec<Id>);

impl TryFrom<proto::GetProductsRequest> for ProductIds {
    type Error = InvalidRequest;

    fn try_from(request: proto::GetProductsRequest) -> Result<Self, Self::Error> {
        if request.ids.len() > MAX_IDS_PER_CALL {
            return Err(InvalidRequest::TooManyIds(request.ids.len()));
        }
        let ids = request
            .ids
            .iter()
            .enumerate()
            .map(|(index, id)| Id::parse(id).map_err(|error| InvalidRequest::Ids { index, error }))
            .collect::<Result<_, _>>()?;
        Ok(Self(ids))
    }
}

struct Search {
    text: SearchText,
    window: ResultWindow,
}

impl TryFrom<proto::SearchProductsRequest> for Search {
    type Error = InvalidRequest;

    fn try_from(request: proto::SearchProductsRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            text: SearchText::parse(&request.query)?,
            window: ResultWindow::new(Page::new(request.skip, request.take))?,
        })
    }
}

fn to_proto(product: Product) -> proto::Product {
    let created_at = product.created_at;
    proto::Product {
        id: product.id.to_string(),
        name: product.name.into_string(),
        description: product.description.into_string(),
        price: Some(ProtoMoney {
            minor_units: product.price.minor_units(),
        }),
        created_at: Some(prost_types::Timestamp {
            seconds: created_at.timestamp(),
            // Below one billion, so it fits.
            nanos: i32::try_from(created_at.timestamp_subsec_nanos()).unwrap_or(0),
        }),
    }
}

fn to_protos(products: Vec<Product>) -> Vec<proto::Product> {
    products.into_iter().map(to_proto).collect()
}

impl<S: ProductStore> CatalogGrpc<S> {
    async fn create(
        &self,
        request: proto::CreateProductRequest,
    ) -> Result<proto::CreateProductResponse, CatalogError> {
        let new = NewProduct::try_from(request)?;
        let product = Product::create(new.name, new.description, new.price);
        self.store.create(&product).await?;
        Ok(proto::CreateProductResponse {
            product: Some(to_proto(product)),
        })
    }

    async fn get(
        &self,
        request: proto::GetProductRequest,
    ) -> Result<proto::GetProductResponse, CatalogError> {
        let id = Id::parse(&request.id).map_err(InvalidRequest::Id)?;
        let product = self
            .store
            .get(&id)
            .await?
            .ok_or(CatalogError::NotFound(id))?;
        Ok(proto::GetProductResponse {
            product: Some(to_proto(product)),
        })
    }

    async fn get_many(
        &self,
        request: proto::GetProductsRequest,
    ) -> Result<proto::GetProductsResponse, CatalogError> {
        let ProductIds(ids) = ProductIds::try_from(request)?;
        let products = self.store.get_many(&ids).await?;
        Ok(proto::GetProductsResponse {
            products: to_protos(products),
        })
    }

    async fn list(
        &self,
        request: proto::ListProductsRequest,
    ) -> Result<proto::ListProductsResponse, CatalogError> {
        let window = ResultWindow::new(Page::new(request.skip, request.take))
            .map_err(InvalidRequest::from)?;
        let products = self.store.list(window).await?;
        Ok(proto::ListProductsResponse {
            products: to_protos(products),
        })
    }

    async fn search(
        &self,
        request: proto::SearchProductsRequest,
    ) -> Result<proto::SearchProductsResponse, CatalogError> {
        let Search { text, window } = Search::try_from(request)?;
        let products = self.store.search(&text, window).await?;
        Ok(proto::SearchProductsResponse {
            products: to_protos(products),
        })
    }
}

#[tonic::async_trait]
impl<S: ProductStore> CatalogService for CatalogGrpc<S> {
    async fn create_product(
        &self,
        request: Request<proto::CreateProductRequest>,
    ) -> Result<Response<proto::CreateProductResponse>, Status> {
        let answer = self.create(request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn get_product(
        &self,
        request: Request<proto::GetProductRequest>,
    ) -> Result<Response<proto::GetProductResponse>, Status> {
        let answer = self.get(request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn get_products(
        &self,
        request: Request<proto::GetProductsRequest>,
    ) -> Result<Response<proto::GetProductsResponse>, Status> {
        let answer = self.get_many(request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn list_products(
        &self,
        request: Request<proto::ListProductsRequest>,
    ) -> Result<Response<proto::ListProductsResponse>, Status> {
        let answer = self.list(request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn search_products(
        &self,
        request: Request<proto::SearchProductsRequest>,
    ) -> Result<Response<proto::SearchProductsResponse>, Status> {
        let answer = self.search(request.into_inner()).await?;
        Ok(Response::new(answer))
    }
}
