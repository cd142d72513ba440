// The Azure resources of the DICOM registrations API, for the Azure Developer CLI (`azd up`), laid out as
// Microsoft's Functions quickstart templates are: a subscription-scope main.bicep that makes the resource
// group, modules under app/, outputs that azd keeps in its environment. What Bicep cannot grant (Graph
// application permissions, the API's own app registration, roles on DICOM services that may live in other
// subscriptions) is `python -m registrations.setup`'s, run next (docs/deploying.md).
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; with the subscription and location it makes the resource names.')
param environmentName string

@minLength(1)
@description('Region of every resource (one that offers the Flex Consumption plan).')
param location string

@description('DICOM_SERVICES: JSON naming the DICOM targets (docs/settings.md).')
param dicomServices string

@description('API_CLIENT_ID: appId of the API\'s own registration, as setup prints it (empty before setup).')
param apiClientId string = ''

@description('API_AUDIENCE: identifier URI of the API\'s own registration, as setup prints it.')
param apiAudience string = ''

@description('GRANT_ADMIN_CONSENT: consent to the delegated DICOM scope for each new client.')
param grantAdminConsent bool = true

@description('MANAGE_OWNERS: allow owners in requests; the identity then needs Application.ReadWrite.All.')
param manageOwners bool = false

@description('REQUESTER_ACCESS: JSON of the access levels Registrations.Request callers may ask for.')
param requesterAccess string = '{}'

@description('ALLOWED_REDIRECT_HOSTS: comma-separated hosts redirect URIs may use (empty: any for admins; requesters may not create public or confidential clients).')
param allowedRedirectHosts string = ''

@description('ALLOWED_REDIRECT_SCHEMES: comma-separated custom schemes native clients may use beyond the documented msauth forms.')
param allowedRedirectSchemes string = ''

@description('REQUESTER_ADMIN_CONSENT: tenant-wide consent for clients a requester creates (off: an administrator grants it).')
param requesterAdminConsent bool = false

@description('ALLOWED_FEDERATED_ISSUERS: comma-separated issuers federated credentials may trust.')
param allowedFederatedIssuers string = ''

@description('Microsoft Graph origin (another for a national cloud).')
param graphEndpoint string = 'https://graph.microsoft.com'

@description('Also deploy the sample approval Logic App (samples/logic-apps/workflow.json).')
param deployLogicApp bool = false

@description('Who approves requests in the sample Logic App.')
param approverEmail string = ''

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    dicomServices: dicomServices
    apiClientId: apiClientId
    apiAudience: apiAudience
    grantAdminConsent: grantAdminConsent
    manageOwners: manageOwners
    requesterAccess: requesterAccess
    allowedRedirectHosts: allowedRedirectHosts
    allowedRedirectSchemes: allowedRedirectSchemes
    requesterAdminConsent: requesterAdminConsent
    allowedFederatedIssuers: allowedFederatedIssuers
    graphEndpoint: graphEndpoint
  }
}

module logicApp 'app/logicapp.bicep' = if (deployLogicApp) {
  name: 'logicapp'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    functionAppName: api.outputs.name
    apiAudience: apiAudience
    apiClientId: apiClientId
    approverEmail: approverEmail
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_NAME string = api.outputs.name
output API_BASE string = api.outputs.apiBase
output FUNCTION_PRINCIPAL_ID string = api.outputs.principalId
output KEY_VAULT_URL string = api.outputs.keyVaultUrl
output KEY_VAULT_RESOURCE_ID string = api.outputs.keyVaultResourceId
output STORAGE_ACCOUNT_ID string = api.outputs.storageAccountId
output LOGIC_APP_NAME string = deployLogicApp ? logicApp.outputs.name : ''
output LOGIC_APP_PRINCIPAL_ID string = deployLogicApp ? logicApp.outputs.principalId : ''
