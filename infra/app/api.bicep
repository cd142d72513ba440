// The function app and what it needs in its resource group: Flex Consumption plan, storage reached with the
// app's system-assigned identity (no keys), Application Insights with local authentication off, and the Key
// Vault (RBAC mode) that holds client secrets. Its roles here are the vault's two that
// `python -m registrations.setup` would otherwise grant (tests/deploy/test_infra.py checks they match).
param location string
param tags object
param resourceToken string
param dicomServices string
param apiClientId string
param apiAudience string
param grantAdminConsent bool
param manageOwners bool
param requesterAccess string
param allowedRedirectHosts string
param allowedRedirectSchemes string
param requesterAdminConsent bool
param allowedFederatedIssuers string
param graphEndpoint string

var deploymentContainer = 'app-package-${resourceToken}'
// Built-in role ids ("Azure built-in roles").
var storageBlobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var storageTableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
var keyVaultSecretsOfficer = 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
var rbacAdministrator = 'f58310d9-a9f6-439a-9e8d-f62e7b41a168'
// Microsoft's "Constrain roles" condition: assign and remove Key Vault Secrets User only (per-secret reads).
var secretsUserOnly = '((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/write\'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {4633458b-17de-408a-b874-0445c86b69e6})) AND ((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/delete\'})) OR (@Resource[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {4633458b-17de-408a-b874-0445c86b69e6}))'

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-${resourceToken}'
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'st${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
  }
  resource blobs 'blobServices' = {
    name: 'default'
    resource container 'containers' = {
      name: deploymentContainer
    }
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: 'kv-${resourceToken}'
  location: location
  tags: tags
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-${resourceToken}'
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: 2048
        maximumInstanceCount: 40
      }
      runtime: { name: 'python', version: '3.11' }
    }
  }

  // Every setting the code reads (docs/settings.md), defaults written out so that they are visible here.
  resource settings 'config' = {
    name: 'appsettings'
    properties: {
      AzureWebJobsStorage__accountName: storage.name
      AzureWebJobsStorage__credential: 'managedidentity'
      // The registry: a table in the app's own storage account, reached with its identity (no key).
      AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
      REGISTRY_TABLE: 'registrations'
      APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'Authorization=AAD'
      LOG_LEVEL: 'INFO'
      AZURE_TENANT_ID: tenant().tenantId
      AZURE_AUTHORITY_HOST: environment().authentication.loginEndpoint
      GRAPH_ENDPOINT: graphEndpoint
      ARM_ENDPOINT: environment().resourceManager
      KEY_VAULT_URL: vault.properties.vaultUri
      KEY_VAULT_RESOURCE_ID: vault.id
      API_CLIENT_ID: apiClientId
      API_AUDIENCE: apiAudience
      DICOM_SERVICES: dicomServices
      GRANT_ADMIN_CONSENT: string(grantAdminConsent)
      MANAGE_OWNERS: string(manageOwners)
      REQUESTER_ACCESS: requesterAccess
      ALLOWED_REDIRECT_HOSTS: allowedRedirectHosts
      ALLOWED_REDIRECT_SCHEMES: allowedRedirectSchemes
      REQUESTER_ADMIN_CONSENT: string(requesterAdminConsent)
      ALLOWED_FEDERATED_ISSUERS: allowedFederatedIssuers
      MAX_REGISTRATIONS_PER_REQUESTER: '50'
      DIRECTORY_OBJECT_QUOTA: '250'
      REGISTRATION_NAME_PREFIX: 'dicomreg'
      SECRET_LIFETIME_DAYS: '180'
      SECRET_MAX_LIFETIME_DAYS: '365'
      PROVISIONING_DEADLINE_SECONDS: '60'
      VERIFY_PROPAGATION_SECONDS: '600'
      VERIFY_DATA_PLANE: 'true'
      DICOM_CORS_FOR_SPA: 'false'
      SWEEP_SCHEDULE: '0 0 3 * * *'
      ROTATION_OVERLAP_DAYS: '7'
      ROTATE_BEFORE_DAYS: '30'
      EXPIRY_WARNING_DAYS: '30'
    }
  }
}

// The app's identity: its own storage and telemetry, and the vault as setup grants it.
resource blobOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, storageBlobDataOwner)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataOwner)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The registry's table (README, "How it works"): read and write entities, nothing else of the account's.
resource tableContributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, storageTableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageTableDataContributor)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, functionApp.id, monitoringMetricsPublisher)
  scope: insights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionApp.id, keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsOfficer)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource secretReadGrants 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, functionApp.id, rbacAdministrator)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', rbacAdministrator)
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
    condition: secretsUserOnly
    conditionVersion: '2.0'
  }
}

output name string = functionApp.name
output apiBase string = 'https://${functionApp.properties.defaultHostName}/api'
output principalId string = functionApp.identity.principalId
output keyVaultUrl string = vault.properties.vaultUri
output keyVaultResourceId string = vault.id
output storageAccountId string = storage.id
